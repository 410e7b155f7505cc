"""Sparse execution: an off sub-block is never run, and rows a sub-block does not serve are never
computed.

:func:`run_rows` is the one gather → run → scatter step; every sparse path uses it: the
sub-blocks of a block here, DRNet's whole-block convex mix and LC-Net's sliced block. Valid only
with hard 0/1 decisions and BatchNorm in eval mode (per-row results must not depend on the rest of
the batch), which is why ``auto`` picks sparse execution only at eval.

Host synchronisations (what a CUDA stream waits for): one per gated block, where the per-path row
counts come to the host (``tolist``) because the gathered shapes depend on them. The row indices
then come from a stable sort of the mask cut at the known count, which needs no second sync
(``nonzero`` would cost one per partially-on path); on the CPU, where there is no stream to
stall, ``nonzero`` is cheaper and used instead. Under autocast a path's output may be in a lower
precision than the tensor it is added into; it is cast to the sum's dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..network.inplace import shares_memory

__all__ = ["add_into", "gather", "on_rows", "run_rows", "run_sparse", "shares_memory"]


def _nhwc(t: Tensor) -> bool:
    """Whether ``t`` is a channels-last image batch (and not also plain contiguous)."""
    return (t.dim() == 4 and not t.is_contiguous()
            and t.is_contiguous(memory_format=torch.channels_last))


def gather(t: Tensor, rows: Tensor | None) -> Tensor:
    """The rows of ``t`` (all of them for ``rows=None``), in ``t``'s memory layout
    (``index_select`` alone would return a channels-last batch as NCHW)."""
    if rows is None:
        return t
    if _nhwc(t):
        return t.permute(0, 2, 3, 1).index_select(0, rows).permute(0, 3, 1, 2)
    return t.index_select(0, rows)


def _scatter(out: Tensor, rows: Tensor, y: Tensor, replace: bool) -> Tensor:
    """``out[rows] (+)= y`` in place, on the NHWC views when both are channels-last."""
    if _nhwc(out) and _nhwc(y):
        o, v = out.permute(0, 2, 3, 1), y.permute(0, 2, 3, 1)
        o.index_copy_(0, rows, v) if replace else o.index_add_(0, rows, v)
        return out
    return out.index_copy_(0, rows, y) if replace else out.index_add_(0, rows, y)


def add_into(out: Tensor, y: Tensor, owned: bool) -> Tensor:
    """``out + y``, in place when ``out`` is ``owned`` and keeps the sum's dtype (autocast: a
    bf16 path into an fp32 sum) — no new batch-sized tensor, no page faults for it."""
    if owned and torch.promote_types(out.dtype, y.dtype) == out.dtype:
        return out.add_(y)
    return out + y


def run_rows(
    on: Tensor | None, count: int, batch: int, run: Callable[[Tensor | None], Tensor],
    out: Tensor | None, *, replace: bool = False, owned: bool = False,
) -> Tensor | None:
    """``out`` with ``run(rows)`` added (``replace``: written) at the rows where ``on`` holds.

    ``count`` is the number of on rows out of ``batch`` (the caller knows it without another
    sync; ``on`` may be None when count is 0 or ``batch``). ``run`` gets the row indices, or None
    when every row is on, and gathers what it needs with :func:`gather`. No row on: ``out``
    unchanged (possibly None). ``out`` is never written in place unless ``owned`` (it may be the
    caller's tensor, e.g. an identity shortcut's input).
    """
    if count == 0:
        return out
    if count == batch:
        y = run(None)
        return y if out is None or replace else add_into(out, y, owned)
    assert on is not None, "a partial row count needs the row mask"
    rows = on_rows(on, count)
    y = run(rows)
    if out is None:
        fmt = torch.channels_last if _nhwc(y) else torch.contiguous_format
        out = y.new_zeros((batch, *y.shape[1:])).contiguous(memory_format=fmt)
    else:
        dtype = torch.promote_types(out.dtype, y.dtype)  # autocast: a bf16 path into fp32
        out = out.to(dtype) if out.dtype != dtype else out if owned else out.clone()
        y = y.to(dtype)
    return _scatter(out, rows, y, replace)


def on_rows(on: Tensor, count: int) -> Tensor:
    """Ascending indices of the ``count`` true rows of ``on`` (no host sync off the CPU)."""
    if on.device.type == "cpu":
        return on.nonzero().squeeze(1)
    return torch.sort(on.to(torch.uint8), descending=True, stable=True).indices[:count]


def run_sparse(
    paths: Sequence[nn.Module], x: Tensor, gates: Tensor, base: Tensor | None,
    dense_above: Sequence[float] | None = None, *, owned: bool = False,
) -> Tensor:
    """base + Σ_n F_n(x[rows where s_n = 1]) scattered back; off rows and sub-blocks never run.

    ``owned``: the caller gives ``base`` away, so it may be written in place (unless it shares
    ``x``'s memory: the paths' row sets overlap, so a later path would read a written row).

    ``dense_above[n]``: the fraction of rows from which sub-block n runs on the whole batch and
    is masked instead of gathered (set by :func:`dmnn.execution.autotune.autotune_sparse` where
    that measured faster). The default, None, never computes an off row.
    """
    batch = x.shape[0]
    on: Tensor | None = None
    if batch == 1:  # one sync, no tensor ops: batch-1 latency is per-op overhead
        counts = [int(g > 0.5) for g in gates[0].tolist()]
    else:
        on = gates > 0.5
        counts = on.sum(dim=0).tolist()
    out = base
    owned = owned and not shares_memory(base, x)  # whether ``out`` may be written in place
    for n, path in enumerate(paths):
        count = counts[n]
        if count == 0:
            continue
        if on is not None and dense_above is not None and batch > count >= dense_above[n] * batch:
            y = path(x) * on[:, n].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
            out = y if out is None else add_into(out, y, owned)
        else:
            out = run_rows(None if on is None else on[:, n], count, batch,
                           lambda rows, p=path: p(gather(x, rows)), out, owned=owned)
        owned = True
    if out is None:
        raise RuntimeError("every sub-block is off and the block has no shortcut: no output")
    return out
