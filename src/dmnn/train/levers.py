"""Loss terms the harness adds to any gated method's loss (``--distill``, ``--gate-entropy``).

In-place distillation (slimmable / dynamic-slimmable networks): in the same training step the
all-on network learns from the labels and its logits teach the gated network.

Why: a gated network trained from scratch sees each sub-block on only part of the time and each
image through one sampled subnetwork; the all-on network's soft predictions are a denser target
than the one-hot label, and training the all-on network keeps every sub-block useful. The
teacher runs with the gates forced on (their decisions replaced, their cost real); its logits
are detached in the KL, so the student does not pull the teacher toward itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def distill_loss(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """T²·KL(softmax(teacher/T) ‖ softmax(student/T)), batch mean; the teacher is detached.

    T² keeps the gradient's scale independent of T (Hinton et al. 2015)."""
    t = temperature
    target = F.log_softmax(teacher.detach().float() / t, dim=-1)
    log_p = F.log_softmax(student.float() / t, dim=-1)
    return F.kl_div(log_p, target, reduction="batchmean", log_target=True) * (t * t)


def ramp(weight: float, step: int, warmup_steps: float) -> float:
    """``weight`` scaled linearly from 0 at step 0 to full at ``warmup_steps`` (full if 0).

    Why (``--gate-entropy-warmup``): with the entropy term from the first step the gates decide
    before the sub-blocks have learned anything to decide between, and what they decide is the
    same for every image; a guarded phase first lets per-image preferences form."""
    if warmup_steps <= 0:
        return weight
    return weight * min(1.0, step / warmup_steps)


def gate_entropy_loss(probs: Sequence[Tensor | None]) -> Tensor:
    """Mean binary entropy H(p) = −p·ln p − (1 − p)·ln(1 − p) of every gate's on-probability,
    averaged per block, then over the gated blocks.

    Why: the rate terms hold a batch mean, which p_on = 1/2 for every image meets exactly; a gate
    that undecided flips with the Gumbel noise (or with any small change of its input), so each
    image trains a different random subnetwork, as with heavy stochastic depth. Penalising H
    pushes each gate to decide per image while the rate terms keep the batch rate."""
    terms = []
    for p in probs:
        if p is None:
            continue
        p = p.float().clamp(1e-6, 1 - 1e-6)
        terms.append(-(p * p.log() + (1 - p) * (1 - p).log()).mean())
    return torch.stack(terms).mean() if terms else torch.zeros(())
