"""The Gumbel straight-through trick (eqn 8) and the gate-noise schedule.

Shared by every method whose gates sample [off, on] logits in training (DMNN, ConvNet-AIG).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def sample_gumbel(shape: torch.Size, *, device=None, dtype=None, generator=None) -> Tensor:
    """Gumbel(0, 1) noise: −log(−log U), with U kept away from 0 and 1."""
    u = torch.rand(shape, device=device, dtype=dtype, generator=generator)
    eps = torch.finfo(u.dtype).tiny
    return -torch.log(-torch.log(u.clamp(eps, 1.0 - 1e-7)))


def straight_through_gumbel(
    logits: Tensor, tau: float = 1.0, noise: Tensor | None = None, noise_scale: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Eqn 8 in training: hard one-hot of softmax((g + Δ)/τ), soft gradient.

    ``logits`` (..., 2) ordered [off, on]. Returns (hard one-hot carrying the soft gradient,
    soft probabilities). ``noise`` overrides the Gumbel sample (tests pin eqn 8 with it);
    ``noise_scale`` multiplies the sampled noise (0: deterministic decisions, as at eval).
    """
    if noise is None:
        if noise_scale == 0.0:
            noise = torch.zeros_like(logits)
        else:
            noise = noise_scale * sample_gumbel(
                logits.shape, device=logits.device, dtype=logits.dtype)
    soft = F.softmax((logits + noise) / tau, dim=-1)
    index = soft.argmax(dim=-1, keepdim=True)
    hard = torch.zeros_like(soft).scatter_(-1, index, 1.0)
    return hard - soft.detach() + soft, soft


def on_gates(
    logits: Tensor, training: bool, tau: float = 1.0, noise_scale: float = 1.0
) -> Tensor:
    """Eqn 8 for [..., (off, on)] logits: the 'on' gate of each (sample, path).

    Training: hard straight-through Gumbel sample. Eval: the noise-free argmax (ties go to off,
    argmax's first index), as few ops as possible because every gate runs it once per block
    and batch-1 latency counts.
    """
    if training:
        return straight_through_gumbel(logits, tau, noise_scale=noise_scale)[0][..., 1]
    return logits.argmax(dim=-1).to(logits.dtype)


def on_probs(logits: Tensor) -> Tensor:
    """P(on) = softmax([off, on])[on] = sigmoid(on − off)."""
    return torch.sigmoid(logits[..., 1] - logits[..., 0])


def noise_schedule(
    epoch: int, epochs: int, anneal_from: float, final: float, start: float = 1.0
) -> float:
    """Gumbel noise scale for an epoch: ``start`` until ``anneal_from`` of training, then linear
    to ``final`` at the last epoch (``start`` 0 and ``final`` 0: noise-free straight-through).

    Why: eval decides by argmax without noise, so a gate that is on 70 % of the time in training
    is always on at test; ending training with little noise makes the training-time MACs ratio,
    which the resource loss holds at r, the one the evaluation sees.
    """
    if epochs <= 1 or anneal_from >= 1.0:
        return start
    progress = epoch / (epochs - 1)
    if progress <= anneal_from:
        return start
    return start + (progress - anneal_from) / (1.0 - anneal_from) * (final - start)
