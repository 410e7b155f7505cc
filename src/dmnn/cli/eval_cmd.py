"""``dmnn eval``: re-evaluate a checkpoint; per-sample MACs, gates and predictions to a file."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer

from ..checks import check_output
from ..files import atomic_write_json, with_ext, writing
from ..train.checkpoint import atomic_save_tensors, read_checkpoint
from .app import fail, friendly, print_json


def eval_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint .json written by dmnn train.")],
    data_dir: Annotated[str | None, typer.Option("--data-dir", help="Dataset folder.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="Base path of the per-sample outputs BASE.safetensors and BASE.json "
        "(default: CHECKPOINT.eval, next to the checkpoint).")] = None,
    device: Annotated[str, typer.Option("--device")] = "cpu",
    latency_table: Annotated[Path | None, typer.Option(
        "--latency-table", help="A `dmnn profile` table of the model: report the predicted "
        "latency ratio to the static backbone (default: the run folder's latency_table.json, "
        "when it has one).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Top-1/5, per-sample MACs, execution rates; saves per-sample MACs, gates, predictions.

    Under torchrun every process evaluates a shard and rank 0 writes the gathered result."""
    from ..distributed.group import setup
    from ..evaluation.restore import load_for_eval, run_eval
    from ..train.device import pick_device

    base = out if out is not None else with_ext(checkpoint, ".eval")
    per_sample, summary_path = with_ext(base, ".safetensors"), with_ext(base, ".json")
    check_output(per_sample, "--out", folder=False)
    check_output(summary_path, "--out", folder=False)
    meta, tensors = read_checkpoint(checkpoint)
    # suffixes are appended, never swapped: Path.with_suffix turned the default
    # "calibrated.eval" into "calibrated.safetensors" and overwrote the checkpoint being read
    ours = {checkpoint.resolve(), (checkpoint.parent / meta["tensors"]).resolve()}
    if per_sample.resolve() in ours or summary_path.resolve() in ours:
        fail(f"--out {base} would overwrite the checkpoint {checkpoint}: pick another path")
    from ..network.latency_table import LatencyTable
    from ..train.budget import run_table_path

    saved = run_table_path(checkpoint.parent)
    table = (LatencyTable.from_file(latency_table) if latency_table is not None
             else LatencyTable.from_file(saved, "the run's latency table") if saved.is_file()
             else None)
    ctx, dev = setup(pick_device(device))
    model, data, cfg = load_for_eval(meta, tensors, data_dir, str(dev), source=str(checkpoint))
    if table is not None:
        table.check_for(meta["model"], model, data.input_size)
    if ctx is not None:
        data.test.shard(ctx.rank, ctx.world_size, pad=False)
    with ctx.activate() if ctx is not None else nullcontext():
        summary, record = run_eval(model, data, cfg, str(dev), table)
    if ctx is not None and not ctx.is_main:
        return
    with writing(summary_path):
        atomic_save_tensors(per_sample, record.tensors())
        summary["per_sample_file"] = str(per_sample)
        atomic_write_json(summary_path, summary)
    if as_json:
        print_json(summary)
        return
    typer.echo(
        f"top1 {summary['top1']:.4f}  top5 {summary['top5']:.4f}  MACs {summary['macs_mean']:.4g}"
        f" ± {summary['macs_std']:.3g}  ratio {summary['macs_ratio']:.3f} "
        f"(dynamic part {summary['macs_ratio_dynamic']:.3f})  params {summary['params']:,}"
    )
    if "latency_ratio" in summary:
        typer.echo(f"predicted latency ratio {summary['latency_ratio']:.3f} of the static "
                   f"backbone at batch {summary['latency_batch']} ({table.source}); "
                   "`dmnn bench --checkpoint` measures it")
    for block, rates in summary["exec_rate_sub_block"].items():
        typer.echo(f"  block {block:>3}: " + " ".join(f"{r:.2f}" for r in rates))
    if "gate_patterns" in summary:
        pats = summary["gate_patterns"]
        typer.echo(f"gate patterns: {pats['distinct']} distinct, {pats['at_least_5pct']} taken by "
                   "≥ 5 % of images; most common: "
                   + " ".join(f"{v:.3f}" for v in pats["top_shares"]))
    typer.echo(f"per-sample file: {summary['per_sample_file']}")


def register(app: typer.Typer) -> None:
    app.command("eval")(friendly(eval_cmd))
