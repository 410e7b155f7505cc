"""How a block's paths are run given its gates.

* ``dense``: every path runs on the whole batch and is multiplied by its gate (eqn 4 literally).
  Training needs it: the straight-through gradient of s_{l,n} is F_{l,n}(X), even where s = 0.
* ``sparse``: an off path is never run. A path that every row needs runs dense; one that no row
  needs is skipped; otherwise its rows are gathered, run, and scatter-added into the output.
  Valid only with hard 0/1 gates and BatchNorm in eval mode (per-row results do not depend on the
  rest of the batch), which is why ``auto`` picks it only at eval.
* ``grouped``: dense, with the N paths fused into one stack of ops built from the per-path
  parameters (:mod:`dmnn.grouped`): same result and gradients, far fewer small convolutions.
  ``auto`` uses it in training where the paths' structure allows it, else dense.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import Tensor, nn

from .grouped import try_run_grouped

ExecutionMode = Literal["auto", "dense", "sparse", "grouped"]
EXECUTION_MODES: tuple[str, ...] = ("auto", "dense", "sparse", "grouped")


def check_mode(mode: str) -> None:
    if mode not in EXECUTION_MODES:
        raise ValueError(f"execution mode must be one of {EXECUTION_MODES}, got {mode!r}")


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


def run_sparse(
    paths: Sequence[nn.Module], x: Tensor, gates: Tensor, base: Tensor | None,
    dense_above: Sequence[float] | None = None,
) -> Tensor:
    """base + Σ_n F_n(x[rows where s_n = 1]) scattered back; off rows/paths never run.

    ``dense_above[n]``: the fraction of rows from which path n runs on the whole batch and is
    masked instead of gathered (set by :func:`dmnn.calibrate.calibrate_sparse` where that measured
    faster). The default, 1.0, never computes an off row.
    """
    batch = x.shape[0]
    if batch == 1:  # one sync, no tensor ops: batch-1 latency is per-op overhead
        counts = [int(g > 0.5) for g in gates[0].tolist()]
    else:
        on = gates > 0.5
        counts = on.sum(dim=0).tolist()
    out = base
    owned = False  # whether ``out`` may be written in place (never the caller's tensor)
    for n, path in enumerate(paths):
        count = counts[n]
        if count == 0:
            continue
        if count == batch:
            y = path(x)
            out, owned = (y, True) if out is None else (out + y, True)
            continue
        if dense_above is not None and count >= dense_above[n] * batch:
            y = path(x) * on[:, n].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
            out, owned = (y, True) if out is None else (out + y, True)
            continue
        rows = on[:, n].nonzero().squeeze(1)
        y = path(x.index_select(0, rows))
        if out is None:
            out = y.new_zeros((batch, *y.shape[1:]))
        elif not owned:
            out = out.clone()
        owned = True
        out.index_add_(0, rows, y)
    if out is None:
        raise RuntimeError("every path is off and the block has no shortcut: output undefined")
    return out


def run_paths(
    paths: Sequence[nn.Module], x: Tensor, gates: Tensor | None, base: Tensor | None, mode: str,
    training: bool, dense_above: Sequence[float] | None = None,
) -> Tensor:
    """Dispatch (``auto``: grouped, else dense, in training; sparse exactly when not training)."""
    if gates is None:
        return run_dense(paths, x, None, base)
    sparse = mode == "sparse" or (mode == "auto" and not training)
    if sparse:
        return run_sparse(paths, x, gates, base, dense_above)
    if mode == "grouped" or mode == "auto":
        out = try_run_grouped(paths, x, gates, base)
        if out is not None:
            return out
    return run_dense(paths, x, gates, base)
