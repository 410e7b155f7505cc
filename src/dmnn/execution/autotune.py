"""Path autotuning: per sub-block, gather/scatter or masked dense, measured on this machine.

Not to be confused with gate calibration (:mod:`dmnn.train.calibration`), which moves decision
thresholds. For a sub-block that most rows of a batch need, gathering those rows (two copies) can
cost more than running it on the whole batch and masking the off rows. :func:`autotune_sparse`
times both
on each path's real input at a few fractions of rows and sets ``block.dense_above`` to the
smallest fraction from which dense measured faster (1.0 where gathering always won). Off rows are
then computed only where that is measured to save time; without calibration they never are.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import UsageError
from ..network.dynamic_net import DynamicNet

FRACTIONS = (0.5, 0.625, 0.75, 0.875, 0.9375)


def _time(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _inputs(model: DynamicNet, x: Tensor) -> list[Tensor]:
    """Each block's input for batch ``x`` (captured with forward pre-hooks)."""
    seen: list[Tensor] = []
    hooks = [b.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
             for b in model.blocks]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _threshold(
    path: torch.nn.Module, inp: Tensor, fractions: Sequence[float], repeats: int
) -> float:
    """Smallest fraction of rows from which running ``path`` densely beats gather/scatter."""
    batch = inp.shape[0]
    full_out = path(inp)
    full = _time(lambda: path(inp), repeats)
    for f in sorted(fractions):
        rows = torch.arange(max(1, round(f * batch)))

        def gather(r: Tensor = rows) -> Tensor:
            return full_out.new_zeros(full_out.shape).index_add_(0, r, path(inp.index_select(0, r)))

        if full <= _time(gather, repeats):
            return f
    return 1.0


@torch.inference_mode()
def autotune_sparse(
    model: DynamicNet, x: Tensor, fractions: Sequence[float] = FRACTIONS, repeats: int = 5
) -> dict[int, list[float]]:
    """Set and return ``dense_above`` per gated block for batches shaped like ``x``."""
    if x.shape[0] < 2:
        raise UsageError("autotuning needs a batch of at least 2 (batch 1 never gathers)")
    model.eval()
    chosen: dict[int, list[float]] = {}
    for block, inp in zip(model.blocks, _inputs(model, x), strict=True):
        if block.gate is None:
            continue  # an always-on block has nothing to gather
        thresholds = [_threshold(path, inp, fractions, repeats) for path in block.paths]
        block.dense_above = thresholds
        chosen[block.index] = thresholds
    return chosen
