"""Latency benchmark with forced gates: static backbone vs masked dense vs sparse, in one process.

Every variant is timed in the same loop (warm-up, then repeats interleaved and rotated so drift
of a shared machine hits all of them alike). Round i draws one random gate pattern at rate r with
seed i and both the masked and the sparse executors run that
same pattern, so their MACs and outputs are comparable.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from ..checks import check_int, check_number
from ..errors import UsageError
from ..execution.forcing import force_gates
from ..network.block import blocks_patched
from ..network.dynamic_net import DynamicNet
from ..network.memory import check_fits, inference_bytes
from ..registry import backbone_of, create_model, method_of
from ..train.device import pick_device


def without_controllers(model: DynamicNet) -> AbstractContextManager[None]:
    """The same module objects with every gate removed: the static twin, sharing the weights
    (so an A/B timing compares controllers, not two copies of the weights in memory)."""
    return blocks_patched(model.blocks, "gate", None)


def static_twin(model: DynamicNet) -> DynamicNet:
    """The same network with its controllers removed and every sub-block always on."""
    twin = copy.deepcopy(model)
    for block in twin.blocks:
        block.gate = None
        block.gate_override = None
    return twin


def decide_all_on(model: DynamicNet) -> bool:
    """Make every gate decide 'on' by itself where its method can (DMNN: W3 = 0, on-bias >
    off-bias; :meth:`dmnn.Gate.decide_all_on`).

    The all-on variants then run the real gates with no forcing machinery, so the gate overhead
    they show is what a deployed all-on model pays. Returns False when the gates cannot (a
    model's gates are of one method, so then none changed); all-on variants are forced instead.
    """
    gates = [b.gate for b in model.gated_blocks]
    return bool(gates) and all([g.decide_all_on() for g in gates])


def check_bench_args(model: str, rate: float, batch: int, input_size: int | None) -> None:
    if not method_of(model).gated:
        raise UsageError(f"needs a gated model (e.g. dmnn_{backbone_of(model)}), "
                         f"got static {model!r}")
    check_number("rate", rate, 0.0, 1.0)
    check_int("batch", batch, 1)
    if input_size is not None:
        check_int("input_size", input_size, 1)


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def static_backbone_for(name: str, model_kwargs: dict[str, Any] | None = None) -> DynamicNet:
    """The static backbone of a gated model, built with the kwargs that apply to it."""
    keep = ("num_classes", "in_chans", "width_mult")
    kwargs = {k: v for k, v in (model_kwargs or {}).items() if k in keep}
    return create_model(backbone_of(name), **kwargs)


def timed_round(
    variants: dict[str, Callable[[], torch.Tensor]], i: int,
    times: dict[str, list[float]] | None, sync: Callable[[], None] = lambda: None,
) -> dict[str, torch.Tensor]:
    """Run every variant once, in an order rotated by round ``i`` (no variant always first or
    last); append each one's seconds to ``times`` unless it is None (warm-up). Returns outputs.
    ``sync`` waits for queued device work (CUDA), so each time covers its own kernels only."""
    order = list(variants)
    order = order[i % len(order):] + order[: i % len(order)]
    outs = {}
    for name in order:
        sync()
        start = time.perf_counter()
        outs[name] = variants[name]()
        sync()
        elapsed = time.perf_counter() - start
        if times is not None:
            times[name].append(elapsed)
    return outs


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over repeats of num_i / den_i. Both ran back to back in repeat i, so a slow phase
    of a shared, noisy machine cancels in each ratio instead of skewing one variant's median."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


@dataclass
class Timing:
    """What a timed comparison runs on: the gated model and its static backbone, both in eval
    mode on the device in one memory layout, a fixed random input, and the device's sync."""

    model: DynamicNet
    static: DynamicNet
    device: torch.device
    sync: Callable[[], None]
    size: int
    x: torch.Tensor


def timing_setup(name: str, model_kwargs: dict[str, Any] | None, *, batch: int,
                 input_size: int | None, device: str, threads: int | None,
                 channels_last: bool, seed: int, what: str, outputs_alive: int) -> Timing:
    """Build what :func:`bench` and ``dmnn profile`` time (random weights: time does not depend
    on their values); a configuration that cannot fit in this machine's memory fails here."""
    if threads is not None:
        torch.set_num_threads(threads)
    dev = pick_device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = create_model(name, **(model_kwargs or {})).eval().to(dev, memory_format=layout)
    static = static_backbone_for(name, model_kwargs).eval().to(dev, memory_format=layout)
    size = input_size or model.default_input_size
    model.macs_table(size)  # an input the model cannot take fails here
    if dev.type == "cpu":
        check_fits(inference_bytes(model, (size, size), batch) * outputs_alive,
                   f"{what} at {size} px, batch {batch}", "lower --input-size or --batch")
    x = torch.randn(batch, model.in_chans, size, size, generator=torch.Generator().manual_seed(
        seed)).to(dev).contiguous(memory_format=layout)
    return Timing(model, static, dev, sync, size, x)


def bench(
    model: str,
    *,
    rate: float = 0.5,
    batch: int = 1,
    input_size: int | None = None,
    threads: int | None = None,
    repeats: int = 20,
    warmup: int = 3,
    seed: int = 0,
    model_kwargs: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    device: str = "cpu",
    channels_last: bool = False,
) -> dict[str, Any]:
    """Time static (BN folded, as at eval, and unfolded) / twin / all-on / masked / sparse /
    fused forwards; return latencies and ratios, led by fused against the folded static."""
    check_bench_args(model, rate, batch, input_size)
    setup = timing_setup(model, model_kwargs, batch=batch, input_size=input_size, device=device,
                         threads=threads, channels_last=channels_last, seed=seed, what="bench",
                         outputs_alive=3)
    dmnn, static, dev, sync, size, x = (setup.model, setup.static, setup.device, setup.sync,
                                        setup.size, setup.x)
    natural = decide_all_on(dmnn)  # rate-r variants force their gates; all-on ones decide
    all_on = None if natural else "on"
    table = dmnn.macs_table(size)

    def twin() -> torch.Tensor:
        with without_controllers(dmnn):
            return dmnn(x)

    def gated(mode: str, spec, s: int) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            dmnn.set_execution(mode)
            if spec is None:
                return dmnn(x)
            with force_gates(dmnn, spec, seed=s):
                return dmnn(x)
        return run

    def unfolded() -> torch.Tensor:
        static.set_execution("dense")  # every layer as its own module: BN not folded
        try:
            return static(x)
        finally:
            static.set_execution("auto")

    times: dict[str, list[float]] = {k: [] for k in
                                     ("static", "static_unfolded", "twin", "all_on_masked",
                                      "all_on_sparse", "all_on_fused", "masked", "sparse",
                                      "fused")}
    macs: list[float] = []
    max_diff = 0.0
    with torch.inference_mode():
        for i in range(warmup + repeats):
            s = seed + i
            variants = {
                "static": lambda: static(x), "static_unfolded": unfolded, "twin": twin,
                "all_on_masked": gated("dense", all_on, s),
                "all_on_sparse": gated("sparse", all_on, s),
                "all_on_fused": gated("auto", all_on, s),
                "masked": gated("dense", rate, s), "sparse": gated("sparse", rate, s),
                "fused": gated("auto", rate, s),
            }
            outs = timed_round(variants, i, times if i >= warmup else None, sync)
            max_diff = max(max_diff, *((outs["masked"] - outs[k]).abs().max().item()
                                       for k in ("sparse", "fused")))
            if i >= warmup:
                with force_gates(dmnn, rate, seed=s):
                    dmnn.set_execution("sparse")
                    _, routing = dmnn(x, return_routing=True)
                macs.append(routing.macs.mean().item())
            if progress is not None:
                progress(i + 1, warmup + repeats)
    dmnn.set_execution("auto")
    if natural:
        with torch.inference_mode():
            _, routing = dmnn(x, return_routing=True)
        if not all(bool(g.all()) for g in routing.gates if g is not None):
            raise RuntimeError("all-on variant did not run every sub-block")
    ms = {k: median_ms(v) for k, v in times.items()}
    macs_ratio = statistics.fmean(macs) / table.full
    static_full = static.macs_table(size).full
    macs_vs_static = statistics.fmean(macs) / static_full
    vs_static = paired_ratio(times["fused"], times["static"])
    latency_ratio = paired_ratio(times["fused"], times["all_on_masked"])
    return {
        "model": model, "batch": batch, "input_size": size, "rate": rate, "device": str(dev),
        "threads": torch.get_num_threads(), "repeats": repeats, "warmup": warmup,
        "channels_last": channels_last,
        "macs_full": table.full, "macs_static_backbone": static_full,
        "macs_sparse_mean": statistics.fmean(macs),
        # against what a user deploys instead: the static backbone, BN folded like ours
        "latency_ratio_vs_static": vs_static,
        "macs_ratio_vs_static": macs_vs_static,
        "latency_over_macs_vs_static": vs_static / macs_vs_static,
        "all_on_vs_static": paired_ratio(times["all_on_fused"], times["static"]),
        "static_folded_vs_unfolded": paired_ratio(times["static"], times["static_unfolded"]),
        "sparse_vs_static_unfolded": paired_ratio(times["sparse"], times["static_unfolded"]),
        # against our own variants
        "macs_ratio": macs_ratio,
        "latency_ms": ms,
        "latency_ratio": latency_ratio,
        "latency_ratio_sparse": paired_ratio(times["sparse"], times["all_on_masked"]),
        "latency_ratio_masked": paired_ratio(times["masked"], times["all_on_masked"]),
        "latency_over_macs": latency_ratio / macs_ratio,
        "controller_overhead": paired_ratio(times["all_on_fused"], times["twin"]) - 1.0,
        "controller_overhead_sparse": paired_ratio(times["all_on_sparse"], times["twin"]) - 1.0,
        "max_abs_diff_sparse_vs_masked": max_diff,
    }
