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
    probs: (B, N) soft probability that each path is on, for logging and analysis; None where
        :meth:`on_probs` derives it from ``extras['logits']`` (DMNN and AIG: no op per block
        unless routing is requested).
    state: hidden state handed to the next block's gate (DMNN's h_l), or None.
    category_logits: (B, K) controller category prediction (training only), or None.
    extras: method-specific tensors (e.g. for a method's own losses).
    executed: (B, N) 0/1 of the paths that run, when that is not ``gates`` itself (a gate that
        scales by a continuous salience); the MACs table counts these.
    inactive: (B,) channels a channel gate switched off inside the block's path, or None.
    """

    gates: Tensor
    probs: Tensor | None = None
    state: Tensor | None = None
    category_logits: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)
    executed: Tensor | None = None
    inactive: Tensor | None = None

    def on_probs(self) -> Tensor | None:
        """``probs``, computed from ``extras['logits']`` when the gate did not store it."""
        if self.probs is None and "logits" in self.extras:
            return on_probs(self.extras["logits"])
        return self.probs


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


GateOverride = Callable[[int, int, torch.device], Tensor]
"""(block index, batch size, device) -> (B, N) 0/1 gates replacing a block's decision."""


def set_gate_noise(model: torch.nn.Module, scale: float) -> None:
    """Scale the Gumbel noise of every gate that draws any (see :func:`noise_schedule`)."""
    for module in model.modules():
        if hasattr(module, "noise_scale"):
            module.noise_scale = scale


def set_hard_routing(model: torch.nn.Module, hard: bool) -> int:
    """Make soft-mixing routers (DRNet) decide as at test time in training too, and freeze them.

    Why: a router trained by a convex mix tests with a hard threshold; fine-tuning the network
    under the hard decisions closes that gap (DRNet §3.4). Returns how many routers it set.
    """
    count = 0
    for module in model.modules():
        if hasattr(module, "hard_routing"):
            module.hard_routing = hard
            module.requires_grad_(not hard)
            count += 1
    return count


def noise_schedule(epoch: int, epochs: int, anneal_from: float, final: float) -> float:
    """Gumbel noise scale for an epoch: 1 until ``anneal_from`` of training, then linear to
    ``final`` at the last epoch.

    Why: eval decides by argmax without noise, so a gate that is on 70 % of the time in training
    is always on at test; ending training with little noise makes the training-time MACs ratio,
    which the resource loss holds at r, the one the evaluation sees.
    """
    if epochs <= 1 or anneal_from >= 1.0:
        return 1.0
    progress = epoch / (epochs - 1)
    if progress <= anneal_from:
        return 1.0
    return 1.0 - (progress - anneal_from) / (1.0 - anneal_from) * (1.0 - final)
