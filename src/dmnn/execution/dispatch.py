"""How a block's sub-blocks are run given its gates: the execution modes and their dispatch.

* ``dense``: every sub-block runs on the whole batch and is multiplied by its gate (eqn 4
  literally). Training needs it: the straight-through gradient of s_{l,n} is F_{l,n}(X), even
  where s = 0.
* ``sparse`` (:mod:`dmnn.execution.sparse`): an off sub-block is never run; a sub-block that
  every row needs runs dense, one that no row needs is skipped, otherwise its rows are gathered,
  run, and scatter-added into the output. ``auto`` picks it exactly at eval.
* ``grouped`` (:mod:`dmnn.execution.grouped`): dense, with the N sub-blocks fused into one stack
  of ops built from the per-sub-block parameters: same result and gradients, far fewer small
  convolutions. ``auto`` uses it in training where the structure allows it, else dense.
* ``fused`` (:mod:`dmnn.execution.fused`): sparse, with BatchNorm folded and each gate
  pattern's on-paths run as one stack (eval only). ``auto`` uses it at eval where the structure
  allows it, else sparse; static blocks (no gate) are folded too.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..network.modes import EXECUTION_MODES, ExecutionMode, check_mode, resolve
from .fused import drop_fused, run_folded, run_fused
from .grouped import try_run_grouped
from .sparse import run_sparse

__all__ = ["EXECUTION_MODES", "ExecutionMode", "check_mode", "drop_fused", "run_dense",
           "run_folded", "run_paths"]


def run_dense(
    paths: Sequence[nn.Module], x: Tensor, gates: Tensor | None, base: Tensor | None
) -> Tensor:
    """base + Σ_n s_n·F_n(x) with every F_n computed (eqn 4)."""
    out = base
    for n, path in enumerate(paths):
        y = path(x)
        if gates is not None:
            y = y * gates[:, n].to(y.dtype).view(-1, *([1] * (y.dim() - 1)))
        out = y if out is None else out + y
    assert out is not None
    return out


def run_paths(
    paths: Sequence[nn.Module], x: Tensor, gates: Tensor | None, base: Tensor | None, mode: str,
    training: bool, dense_above: Sequence[float] | None = None, *, owned: bool = False,
    split: str = "pattern",
) -> Tensor:
    """Dispatch by :func:`~dmnn.network.modes.resolve` (fused falls back to sparse, grouped
    to dense, where the paths' structure does not allow them). ``owned``: ``base`` is given
    away and may be written in place (the eval executors); ``split``: the fused executor's
    mixed-batch split (:data:`~dmnn.network.modes.MIXED_SPLITS`)."""
    how = resolve(mode, training)
    if how == "fused" and dense_above is None:  # autotuned thresholds: the sparse executor's
        out = run_fused(paths, x, gates, base, owned=owned, split=split)
        if out is not None:
            return out
    if gates is None:
        return run_dense(paths, x, None, base)
    if how in ("sparse", "fused"):
        return run_sparse(paths, x, gates, base, dense_above, owned=owned)
    if how == "grouped":
        out = try_run_grouped(paths, x, gates, base)
        if out is not None:
            return out
    return run_dense(paths, x, gates, base)
