"""``dmnn bench``: measured latency of static, masked-dense and sparse execution."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from tqdm.auto import tqdm

from ..checks import check_int
from ..errors import UsageError
from .app import friendly, print_json


def bench_cmd(
    model: Annotated[str | None, typer.Argument(
        help="A dynamic model, e.g. dmnn_resnet50 (random forced gates).")] = None,
    rate: Annotated[float, typer.Option("--rate", help="Forced gate rate r in [0, 1].")] = 0.5,
    batch: Annotated[int, typer.Option("--batch", help="Batch size.")] = 1,
    input_size: Annotated[int | None, typer.Option("--input-size", help="Pixels.")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="torch CPU threads.")] = None,
    sub_blocks: Annotated[int | None, typer.Option("--sub-blocks", help="N.")] = None,
    repeats: Annotated[int, typer.Option("--repeats", help="Timed repeats.")] = 20,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed warm-up runs.")] = 3,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    checkpoint: Annotated[Path | None, typer.Option(
        "--checkpoint", help="A trained checkpoint .json: time its own gates on its test images "
        "instead of forced random gates.")] = None,
    data_dir: Annotated[str | None, typer.Option(
        "--data-dir", help="Dataset folder for --checkpoint.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    device: Annotated[str, typer.Option(
        "--device", help="cpu | cuda[:N] (forced-gate timing only).")] = "cpu",
    channels_last: Annotated[bool, typer.Option(
        "--channels-last", help="Every variant in the channels-last layout.")] = False,
) -> None:
    """Time the static backbone and the gated model (masked dense, sparse); report the ratios."""
    from ..evaluation.latency import bench, check_bench_args
    from ..registry import model_method

    check_int("repeats", repeats, 1)
    check_int("warmup", warmup, 0)
    if threads is not None:
        check_int("threads", threads, 1)
    if checkpoint is not None:
        if model is not None:
            raise UsageError("give either MODEL or --checkpoint (the checkpoint names its model)")
        if device != "cpu":
            raise UsageError("--device applies to forced-gate timing: --checkpoint times on "
                             "the CPU")
        bench_checkpoint(checkpoint, data_dir, batch, threads, repeats, warmup, as_json,
                         channels_last)
        return
    if model is None:
        raise UsageError("give a MODEL to benchmark (see `dmnn models`) or --checkpoint FILE")
    model_method(model)  # unknown names fail here
    check_bench_args(model, rate, batch, input_size)
    kwargs = {"num_sub_blocks": sub_blocks} if sub_blocks is not None else {}
    bar = Progress(repeats + warmup)
    result = bench(
        model, rate=rate, batch=batch, input_size=input_size, threads=threads, repeats=repeats,
        warmup=warmup, seed=seed, model_kwargs=kwargs,
        progress=bar, device=device, channels_last=channels_last,
    )
    bar.close()
    if as_json:
        print_json(result)
        return
    ms = result["latency_ms"]
    where = result["device"] if result["device"] != "cpu" else f"{result['threads']} threads"
    layout = ", channels-last" if result["channels_last"] else ""
    typer.echo(f"{model}  batch {batch}  {result['input_size']}px  rate {rate}  "
               f"{where}{layout}  median of {repeats}")
    typer.echo(f"against the static backbone (BN folded in both):\n"
               f"  static {ms['static']:.2f} ms, {model} r={rate} {ms['fused']:.2f} ms: "
               f"latency x{result['latency_ratio_vs_static']:.3f} at MACs "
               f"x{result['macs_ratio_vs_static']:.3f} "
               f"(quotient {result['latency_over_macs_vs_static']:.3f}); "
               f"all on x{result['all_on_vs_static']:.3f}")
    for name, label in (("static", "static backbone (folded)"),
                        ("static_unfolded", "static backbone (unfolded)"),
                        ("twin", "static twin (gates removed)"),
                        ("all_on_masked", "all on, masked dense"),
                        ("all_on_sparse", "all on, sparse"),
                        ("all_on_fused", "all on, fused"),
                        ("masked", f"r={rate}, masked dense"),
                        ("sparse", f"r={rate}, sparse (unfolded)"),
                        ("fused", f"r={rate}, fused (default)")):
        typer.echo(f"  {label:32s} {ms[name]:9.2f} ms")
    typer.echo(f"MACs ratio (r / all on)           {result['macs_ratio']:.3f}")
    typer.echo(f"latency ratio (fused / all on)    {result['latency_ratio']:.3f}"
               f"  = {result['latency_over_macs']:.3f} × MACs ratio")
    typer.echo(f"controller overhead (vs twin)     {result['controller_overhead']:+.1%}")


class Progress:
    """A bar on a terminal, and everywhere one line after the first round saying how long the
    whole benchmark will take when that is more than half a minute (224 px at batch 32 with the
    default repeats takes minutes)."""

    def __init__(self, rounds: int) -> None:
        self.bar = tqdm(total=rounds, desc="bench", leave=False, disable=None)
        self.start = time.perf_counter()

    def __call__(self, done: int, total: int) -> None:
        self.bar.update(1)
        if done == 1:
            left = (time.perf_counter() - self.start) * (total - 1)
            if left > 30:
                tqdm.write(f"bench: about {left / 60:.1f} min more for {total - 1} rounds "
                           "(--repeats shortens it)", file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def bench_checkpoint(
    path: Path, data_dir: str | None, batch: int, threads: int | None, repeats: int,
    warmup: int, as_json: bool, channels_last: bool = False,
) -> None:
    """``dmnn bench --checkpoint``: a trained model's own gates on its own test images."""
    from ..evaluation.latency_trained import bench_trained, gather_images
    from ..evaluation.restore import load_for_eval
    from ..network.latency_table import LatencyTable
    from ..train.budget import run_table_path
    from ..train.checkpoint import read_checkpoint

    check_int("batch", batch, 1)
    meta, tensors = read_checkpoint(path)
    model, data, cfg = load_for_eval(meta, tensors, data_dir, "cpu", source=str(path))
    images = gather_images(data.test, batch * (warmup + repeats))
    saved = run_table_path(path.parent)
    table = LatencyTable.from_file(saved, "the run's latency table") if saved.is_file() else None
    if table is not None and (table.batch != batch or table.input_size != data.input_size):
        table = None  # its prediction is for another batch or size: measured only
    bar = Progress(repeats + warmup)
    result = bench_trained(
        model, meta["model"], images, model_kwargs=meta["model_kwargs"], batch=batch,
        repeats=repeats, warmup=warmup, threads=threads, progress=bar,
        channels_last=channels_last, latency=table,
    )
    bar.close()
    if table is not None and cfg.loss.budget == "latency":
        result["target_rate"] = cfg.target_rate
    result["checkpoint"] = str(path)
    if as_json:
        print_json(result)
        return
    typer.echo(f"{result['model']}  batch {batch}  {result['threads']} threads  "
               f"median of {repeats} batches of real test images")
    typer.echo(f"latency ratio vs static backbone  {result['latency_ratio_vs_static']:.3f}"
               f"  at MACs ratio {result['macs_ratio_vs_static']:.3f} (both BN-folded)")
    if "predicted_latency_ratio_vs_static" in result:
        target = (f", the run's latency target {result['target_rate']:g}"
                  if "target_rate" in result else "")
        typer.echo(f"predicted by the run's latency table  "
                   f"{result['predicted_latency_ratio_vs_static']:.3f}{target}")
    for name, ms in result["latency_ms"].items():
        typer.echo(f"  {name:16s} {ms:9.2f} ms")
    if "latency_ratio" in result:
        typer.echo(f"latency ratio (fused / all on)    {result['latency_ratio']:.3f}  "
                   f"(MACs ratio {result['macs_ratio']:.3f})")


def register(app: typer.Typer) -> None:
    app.command("bench")(friendly(bench_cmd))
