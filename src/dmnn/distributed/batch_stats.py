"""Batch means over the global batch, with gradients that come out exact under DDP.

The paper's resource terms are functions of batch statistics: eqn 11's execution rates, eqn
13–14's MACs fraction, the per-sub-block rates of path balance. Under data parallelism each rank
holds a shard of the batch, and G(local mean) averaged over ranks is not G(global mean) for a
non-linear G (the square of eqn 12/14). Here every rank gets the global mean m (one all-reduce
of the local sums, no gradient) and the local mean's gradient scaled by K·n_k/N:

    m̃_k = m + (K·n_k/N)·(m_k − stop_grad(m_k))

Its value is m on every rank (so λ and every loss value agree), and DDP's gradient average
(1/K)·Σ_k G'(m)·(K·n_k/N)·∂m_k = G'(m)·∂m is the single-process gradient on the whole batch,
without a collective in the backward pass. In one process (or outside an active context) the
plain local mean is returned, bit for bit what it was before.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from .group import active


def batch_means(tensors: Sequence[Tensor], dim: int | None = None) -> list[Tensor]:
    """``t.mean()`` (``dim=None``) or ``t.mean(dim)`` of each tensor, over the global batch
    when a data-parallel context is active (one all-reduce for all of them)."""
    ctx = active()
    local = [t.mean() if dim is None else t.mean(dim) for t in tensors]
    if ctx is None or not tensors:
        return local
    counts = [t.numel() if dim is None else t.shape[dim] for t in tensors]
    sums = torch.cat([(m.detach().double() * c).reshape(-1)
                      for m, c in zip(local, counts, strict=True)])
    buf = torch.cat([sums, torch.tensor(counts, dtype=torch.float64, device=sums.device)])
    dist.all_reduce(buf, group=ctx.stats_group)
    totals = buf[sums.numel():]
    out, offset = [], 0
    for i, m in enumerate(local):
        k = m.numel()
        value = (buf[offset:offset + k] / totals[i]).view_as(m).to(m.dtype)
        weight = (ctx.world_size * counts[i] / totals[i]).to(m.dtype)  # no host sync
        out.append(value + weight * (m - m.detach()))
        offset += k
    return out


def batch_mean(t: Tensor, dim: int | None = None) -> Tensor:
    """:func:`batch_means` of one tensor."""
    return batch_means([t], dim)[0]
