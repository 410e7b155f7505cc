"""Which rows of an epoch a rank reads, and putting per-sample results back together.

Training (as torch's ``DistributedSampler``): the epoch's permutation is the same on every rank;
it is padded by repeating its first rows to a multiple of K, and rank k reads rows k, k+K, …, so
every rank takes the same number of equal-sized steps (DDP needs that) and K = 1 is the
single-process order. Evaluation is not padded: rank k reads rows k::K of the split (shards
differ by at most one row) and :func:`gather_rows` interleaves the ranks' results back into the
split's order, so every summary equals the single-process one.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from .group import DistContext


def shard_order(order: Tensor, rank: int, world: int, pad: bool) -> Tensor:
    """Rank ``rank``'s rows of ``order`` (see the module docstring)."""
    if world == 1:
        return order
    if pad and order.numel() % world:
        extra = world - order.numel() % world
        order = torch.cat([order, order[:extra]])
    return order[rank::world]


def gather_rows(ctx: DistContext, local: Tensor, total: int) -> Tensor:
    """The rows of every rank's ``local`` (rank k's rows k::K of ``total``), in split order."""
    world = ctx.world_size
    dtype = local.dtype
    t = local.to(torch.uint8) if dtype == torch.bool else local
    t = t.to(ctx.device).contiguous()
    longest = -(-total // world)
    if t.shape[0] < longest:  # all_gather needs equal sizes: pad, then trim per rank
        t = torch.cat([t, t.new_zeros((longest - t.shape[0], *t.shape[1:]))])
    parts = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(parts, t)
    out = t.new_empty((total, *t.shape[1:]))
    for k, part in enumerate(parts):
        rows = len(range(k, total, world))
        out[k::world] = part[:rows]
    return out.to(dtype).to(local.device)
