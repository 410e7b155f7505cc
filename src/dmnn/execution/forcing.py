"""Forced gating: fix the gates of a model (all on, all off, a random rate, or a pattern).

Used to measure speed and check MACs without a trained model. The controllers still run (their
cost and hidden state stay real); only their decisions are replaced.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager

import torch
from torch import Tensor

from ..checks import check_number
from ..errors import UsageError
from ..network.block import blocks_patched
from ..network.dynamic_net import DynamicNet
from ..network.gate import GateOverride

GateSpec = str | float | Sequence[Tensor] | GateOverride


def make_override(model: DynamicNet, spec: GateSpec, seed: int = 0) -> GateOverride:
    """Turn a spec into a (block, batch, device) -> (B, N) gate function.

    ``"on"`` / ``"off"``; a float rate r in [0, 1]: each (sample, sub-block) gate is on with
    probability r, drawn from a generator seeded with ``seed``; a sequence of per-block tensors
    of shape (N,) or (B, N) (a fixed pattern); or a callable used as is.
    """
    sizes = [b.num_sub_blocks for b in model.blocks]
    if callable(spec):
        return spec
    if isinstance(spec, str):
        if spec not in ("on", "off"):
            raise UsageError(f"gate spec must be 'on', 'off', a rate or a pattern, got {spec!r}")
        value = 1.0 if spec == "on" else 0.0
        return lambda i, b, dev: torch.full((b, sizes[i]), value, device=dev)
    if isinstance(spec, int | float):
        rate = float(spec)
        check_number("rate", rate, 0.0, 1.0)
        gen = torch.Generator().manual_seed(seed)

        def draw(i: int, b: int, dev: torch.device) -> Tensor:
            return (torch.rand((b, sizes[i]), generator=gen) < rate).float().to(dev)

        return draw
    pattern = list(spec)
    if len(pattern) != len(sizes):
        raise UsageError(
            f"gate pattern has {len(pattern)} entries, the model has {len(sizes)} blocks"
        )

    def fixed(i: int, b: int, dev: torch.device) -> Tensor:
        p = torch.as_tensor(pattern[i], dtype=torch.float32, device=dev)
        return p.expand(b, sizes[i]) if p.dim() == 1 else p

    return fixed


def force_gates(
    model: DynamicNet, spec: GateSpec, seed: int = 0
) -> AbstractContextManager[None]:
    """Context manager: gated blocks of ``model`` use ``spec`` instead of their decisions."""
    return blocks_patched(model.gated_blocks, "gate_override", make_override(model, spec, seed))
