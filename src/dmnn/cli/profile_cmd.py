"""``dmnn profile``: the latency table of a gated model on this device (#33)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..checks import check_int, check_output
from .app import friendly, print_json


def profile_cmd(
    model: Annotated[str, typer.Argument(help="A gated model, e.g. dmnn_resnet20.")],
    batch: Annotated[int, typer.Option("--batch", help="Batch size the table is for.")] = 32,
    input_size: Annotated[int | None, typer.Option("--input-size", help="Pixels.")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu | cuda[:N].")] = "cpu",
    threads: Annotated[int | None, typer.Option("--threads", help="torch CPU threads.")] = None,
    channels_last: Annotated[bool, typer.Option(
        "--channels-last", help="Time in the channels-last layout.")] = False,
    sub_blocks: Annotated[int | None, typer.Option("--sub-blocks", help="N.")] = None,
    repeats: Annotated[int, typer.Option("--repeats", help="Timed repeats per entry.")] = 20,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed warm-up runs.")] = 3,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Write the table as JSON to this file.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
) -> None:
    """Latency table: stem, head, each block's controller and cost per gate pattern (per call
    and per row), how well it predicts forced random gates, and the static backbone."""
    from ..evaluation.latency import check_bench_args
    from ..evaluation.profile import profile_model
    from ..files import atomic_write_json, writing
    from ..registry import model_method

    check_int("repeats", repeats, 1)
    check_int("warmup", warmup, 0)
    if threads is not None:
        check_int("threads", threads, 1)
    model_method(model)  # unknown names fail here
    check_bench_args(model, 0.5, batch, input_size)
    if out is not None:
        check_output(out, "--out", folder=False)
    kwargs = {"num_sub_blocks": sub_blocks} if sub_blocks is not None else {}
    table = profile_model(
        model, batch=batch, input_size=input_size, device=device, threads=threads,
        channels_last=channels_last, repeats=repeats, warmup=warmup, seed=seed,
        model_kwargs=kwargs, progress=lambda s: typer.echo(f"profile: {s}", err=True))
    if out is not None:
        with writing(out):
            atomic_write_json(out, table)
    if as_json:
        print_json(table)
        return
    static = table["static_ms"]
    where = table["device"] if table["device"] != "cpu" else f"{table['threads']} threads"
    typer.echo(f"{model}  batch {batch}  {table['input_size']}px  {where}  "
               f"median of {repeats}; ms, and × the static backbone ({static:.2f} ms)")
    typer.echo(f"  stem {table['stem_ms']:.3f} ({table['stem_ms'] / static:.3f})   "
               f"head {table['head_ms']:.3f} ({table['head_ms'] / static:.3f})")
    for b in table["blocks"]:
        costs = "  ".join(f"[{k}] {c['call_ms']:.3f}+{c['row_ms']:.4f}/row"
                          + (f" (all {c['full_ms']:.3f})" if "full_ms" in c else "")
                          for k, c in b["patterns"].items())
        typer.echo(f"  block {b['index']:2d}  controller {b['controller_ms']:.3f}  "
                   f"all off {b['base_ms']:.3f}  {costs}")
    check = table["check"]
    for row in check["rows"]:
        typer.echo(f"  r={row['rate']:.2f}: measured {row['measured_ms']:.2f} ms "
                   f"({row['vs_static']:.3f} × static), predicted "
                   f"{row['predicted_ms']:.2f} ms ({row['error']:+.1%})")
    typer.echo(f"prediction error: median {check['median_abs_error']:.1%}, worst "
               f"{check['worst_abs_error']:.1%}" + (f"; table written to {out}" if out else ""))
    if table["static_spread"] > 0.1:
        typer.echo(f"warning: the static backbone's time moved by {table['static_spread']:.0%} "
                   "during the run: the machine's speed drifted, so the table and its error are "
                   "unreliable; rerun on a quiet machine (or with more --repeats)", err=True)


def register(app: typer.Typer) -> None:
    app.command("profile")(friendly(profile_cmd))
