"""Latency of a trained model on real images, with the gates it decides itself.

``dmnn bench MODEL`` forces random gates to measure an untrained network; this one answers the
question a user of a trained checkpoint asks: on my test images, at batch B, how fast is the
sparse executor against the static backbone and against computing everything? Every variant
runs the same batch in the same rotated loop (see :mod:`dmnn.evaluation.latency`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ..checks import check_int
from ..errors import UsageError
from ..execution.forcing import force_gates
from ..network.dynamic_net import DynamicNet
from ..network.latency_table import LatencyTable
from ..registry import model_method
from .latency import median_ms, paired_ratio, static_backbone_for, timed_round


def gather_images(batches: Iterable, count: int) -> Tensor:
    """The first ``count`` images of a loader (cycled when the split is smaller)."""
    chunks, have = [], 0
    for batch in batches:
        chunks.append(batch.images)
        have += batch.images.shape[0]
        if have >= count:
            break
    if not chunks:
        raise UsageError("the evaluation split is empty: nothing to benchmark on")
    images = torch.cat(chunks)
    reps = -(-count // images.shape[0])
    return images.repeat(reps, 1, 1, 1)[:count]


def bench_trained(
    model: DynamicNet,
    name: str,
    images: Tensor,
    *,
    model_kwargs: dict[str, Any] | None = None,
    batch: int = 1,
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    channels_last: bool = False,
    latency: LatencyTable | None = None,
) -> dict[str, Any]:
    """Time the static backbone (BN folded, as the fused executor runs; and unfolded) against
    the model's own gates: fused (the default at eval), sparse unfolded, masked dense.

    Batch i of the timed loop is ``images[i*batch:(i+1)*batch]``, so the gates are the model's
    decisions on real images (mixed paths at batch > 1). Static and twin models time only
    themselves against the backbone. With the run's ``latency`` table (profiled at this batch
    size), the table's prediction for the same batches' gates sits beside the measured ratio.
    """
    check_int("batch", batch, 1)
    if images.shape[0] < batch * (warmup + repeats):
        raise UsageError(f"need {batch * (warmup + repeats)} images, got {images.shape[0]}")
    if threads is not None:
        torch.set_num_threads(threads)
    model = model.eval()
    static = static_backbone_for(name, model_kwargs).eval()
    if channels_last:  # the same layout for every variant
        model, static = (m.to(memory_format=torch.channels_last) for m in (model, static))
        images = images.contiguous(memory_format=torch.channels_last)
    size = (images.shape[2], images.shape[3])
    table = model.macs_table(size)
    gated = model.is_dynamic

    def run(mode: str, forced: str | None, x: Tensor) -> Tensor:
        model.set_execution(mode)
        if forced is None:
            return model(x)
        with force_gates(model, forced):
            return model(x)

    def unfolded(x: Tensor) -> Tensor:
        static.set_execution("dense")
        try:
            return static(x)
        finally:
            static.set_execution("auto")

    variants: dict[str, Callable[[Tensor], Tensor]] = {"static": static,
                                                        "static_unfolded": unfolded}
    if gated:
        variants |= {
            "all_on_masked": lambda x: run("dense", "on", x),
            "masked": lambda x: run("dense", None, x),
            "sparse": lambda x: run("sparse", None, x),
            "fused": lambda x: run("auto", None, x),
        }
    else:
        variants["model"] = model
    times: dict[str, list[float]] = {k: [] for k in variants}
    macs: list[Tensor] = []
    predicted: list[float] = []
    max_diff = 0.0
    with torch.inference_mode():
        for i in range(warmup + repeats):
            x = images[i * batch:(i + 1) * batch]
            this_round = {k: (lambda f=f, x=x: f(x)) for k, f in variants.items()}
            outs = timed_round(this_round, i, times if i >= warmup else None)
            if i >= warmup:
                model.set_execution("sparse" if gated else "auto")
                routing = model(x, return_routing=True)[1]
                macs.append(routing.macs.double())
                if latency is not None and gated:
                    predicted.append(latency.predict_ms(routing.executed or routing.gates)
                                     / latency.static_ms)
            if gated:
                max_diff = max(max_diff, *((outs["masked"] - outs[k]).abs().max().item()
                                           for k in ("sparse", "fused")))
            if progress is not None:
                progress(i + 1, warmup + repeats)
    model.set_execution("auto")
    ms = {k: median_ms(v) for k, v in times.items()}
    fast = "fused" if gated else "model"
    macs_mean = torch.cat(macs).mean().item()
    static_full = static.macs_table(size).full
    out: dict[str, Any] = {
        "model": name, "method": model_method(name), "batch": batch, "input_size": list(size),
        "threads": torch.get_num_threads(), "repeats": repeats, "warmup": warmup,
        "channels_last": channels_last,
        "images": batch * repeats, "gates": "trained" if gated else "none",
        "macs_full": table.full, "macs_static_backbone": static_full,
        "macs_mean": macs_mean,
        "macs_ratio": macs_mean / table.full,
        "macs_ratio_vs_static": macs_mean / static_full,
        "latency_ms": ms,
        "latency_ratio_vs_static": paired_ratio(times[fast], times["static"]),
        "static_folded_vs_unfolded": paired_ratio(times["static"], times["static_unfolded"]),
    }
    if predicted:
        out["predicted_latency_ratio_vs_static"] = sum(predicted) / len(predicted)
    out["latency_over_macs_vs_static"] = (out["latency_ratio_vs_static"]
                                          / out["macs_ratio_vs_static"])
    if gated:
        ratio = paired_ratio(times["fused"], times["all_on_masked"])
        out |= {
            "latency_ratio_sparse_vs_static_unfolded": paired_ratio(
                times["sparse"], times["static_unfolded"]),
            "latency_ratio": ratio,
            "latency_ratio_sparse": paired_ratio(times["sparse"], times["all_on_masked"]),
            "latency_ratio_masked": paired_ratio(times["masked"], times["all_on_masked"]),
            "latency_over_macs": ratio / out["macs_ratio"],
            "max_abs_diff_sparse_vs_masked": max_diff,
        }
    return out
