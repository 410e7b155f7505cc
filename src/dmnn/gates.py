"""Gate decisions shared by every gating method, and the Gumbel straight-through trick (eqn 8).

Every gating method (DMNN controllers, whole-block gates, ...) returns a :class:`GateDecision` with
``gates`` of shape (B, N): one value per sample and per path of the block. The executor and the
MACs table read only that tensor, so new methods plug in without touching the backbones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class GateDecision:
    """What a gate module decides for one block.

    gates: (B, N) path gates; hard 0/1 at eval, 0/1 with straight-through gradients in training
        (a soft-gated method may return values in [0, 1] in training).
    probs: (B, N) soft probability that each path is on, for logging and analysis.
    state: hidden state handed to the next block's gate (DMNN's h_l), or None.
    category_logits: (B, K) controller category prediction (training only), or None.
    extras: method-specific tensors (e.g. for a method's own losses).
    """

    gates: Tensor
    probs: Tensor
    state: Tensor | None = None
    category_logits: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)


def sample_gumbel(shape: torch.Size, *, device=None, dtype=None, generator=None) -> Tensor:
    """Gumbel(0, 1) noise: −log(−log U), with U kept away from 0 and 1."""
    u = torch.rand(shape, device=device, dtype=dtype, generator=generator)
    eps = torch.finfo(u.dtype).tiny
    return -torch.log(-torch.log(u.clamp(eps, 1.0 - 1e-7)))


def straight_through_gumbel(
    logits: Tensor, tau: float = 1.0, noise: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Eqn 8 in training: hard one-hot of softmax((g + Δ)/τ), soft gradient.

    ``logits`` (..., 2) ordered [off, on]. Returns (hard one-hot carrying the soft gradient,
    soft probabilities). ``noise`` overrides the Gumbel sample (tests pin eqn 8 with it).
    """
    if noise is None:
        noise = sample_gumbel(logits.shape, device=logits.device, dtype=logits.dtype)
    soft = F.softmax((logits + noise) / tau, dim=-1)
    index = soft.argmax(dim=-1, keepdim=True)
    hard = torch.zeros_like(soft).scatter_(-1, index, 1.0)
    return hard - soft.detach() + soft, soft


def hard_argmax(logits: Tensor) -> Tensor:
    """Eqn 8 at eval: deterministic one-hot argmax of the [off, on] logits (ties go to off)."""
    index = logits.argmax(dim=-1, keepdim=True)
    return torch.zeros_like(logits).scatter_(-1, index, 1.0)


GateOverride = Callable[[int, int, torch.device], Tensor]
"""(block index, batch size, device) -> (B, N) 0/1 gates replacing a block's decision."""
