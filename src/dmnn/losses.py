"""Training losses of DMNN (§3.2–3.3): category loss (eqns 9–10), resource loss (eqns 11–15) and
the total (eqn 16).

What f_total covers: with ``macs_scope="network"`` (default) f is the batch-mean MACs of the whole
network for each sample (stem, head, shortcuts, controllers and the executed sub-blocks) and
f_total the whole network with every sub-block on, so r is the whole-network MACs ratio that the
evaluator reports. With ``macs_scope="dynamic"`` f and f_total cover only the gated sub-blocks,
eqn 13 literally. Both ratios are reported in training logs either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .routing import Routing

MACS_SCOPES = ("network", "dynamic")


def stage_weights(stages: Sequence[int], base: float = 1e-4, factor: float = 10.0) -> list[float]:
    """α_l of eqn 10: ``base`` for the first stage, ×``factor`` for each later stage."""
    first = min(stages) if stages else 0
    return [base * factor ** (s - first) for s in stages]


def category_loss(
    category_logits: Sequence[Tensor | None], weights: Sequence[float], categories: Tensor
) -> Tensor:
    """Eqn 10: Σ_l α_l · CE(p_l, k) with eqn 9's cross-entropy per controller (batch mean)."""
    total: Tensor | None = None
    for logits, alpha in zip(category_logits, weights, strict=True):
        if logits is None:
            continue
        term = alpha * F.cross_entropy(logits, categories)
        total = term if total is None else total + term
    return total if total is not None else categories.new_zeros((), dtype=torch.float32)


def execution_rates(gates: Sequence[Tensor | None]) -> Tensor:
    """Eqn 11: z_l = Σ_i b_i / (B·N) for each gated block."""
    rates = [g.float().mean() for g in gates if g is not None]
    return torch.stack(rates) if rates else torch.zeros(0)


def exec_loss(gates: Sequence[Tensor | None], target: float) -> Tensor:
    """Eqn 12: Σ_l (e − z_l)²."""
    return ((target - execution_rates(gates)) ** 2).sum()


def path_balance_loss(gates: Sequence[Tensor | None], target: float) -> Tensor:
    """Σ_l mean_n (e − z_{l,n})², z_{l,n} the batch rate of sub-block n of block l.

    Not in the paper. Eqn 12 holds only each block's rate, which "the same sub-block on for every
    image" satisfies exactly: the path that runs trains, the other never does, and routing
    collapses to a static half-width network. Holding every sub-block to e instead leaves the
    rate the same but can only be met by sending different images to different sub-blocks.
    """
    terms = [((target - g.float().mean(dim=0)) ** 2).mean() for g in gates if g is not None]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def macs_fraction(routing: Routing, scope: str = "network") -> Tensor:
    """f / f_total of eqn 14 for the batch (differentiable through the gates)."""
    table = routing.table
    if scope == "network":
        return routing.macs.mean() / table.full
    if scope == "dynamic":
        if table.dynamic_full == 0:
            return routing.macs.new_zeros(())
        return (routing.macs.mean() - table.static) / table.dynamic_full
    raise ValueError(f"macs_scope must be one of {MACS_SCOPES}, got {scope!r}")


def flops_loss(routing: Routing, target: float, scope: str = "network") -> Tensor:
    """Eqn 14: (f / f_total − r)²."""
    return (macs_fraction(routing, scope).float() - target) ** 2


@dataclass
class LossConfig:
    """α1, α2, α3 of eqn 16, the targets and the ablation switches."""

    target_rate: float = 0.5  # r
    exec_target: float | None = None  # e; None means e = r, as in the paper
    alpha_ctg: float = 1.0
    alpha_res: float = 1.0
    alpha_cls: float = 1.0
    ctg_base: float = 1e-4
    ctg_factor: float = 10.0
    category_supervision: bool = True
    macs_scope: str = "network"
    path_balance: float = 0.0  # weight of path_balance_loss inside L_res (0: the paper's eqn 15)
    dual_step: float = 0.0  # η of the MACs-ratio multiplier λ (0: the paper's fixed eqn 14 only)

    def __post_init__(self) -> None:
        if not 0.0 < self.target_rate <= 1.0:
            raise ValueError(f"target rate r must be in (0, 1], got {self.target_rate}")
        if self.exec_target is not None and not 0.0 <= self.exec_target <= 1.0:
            raise ValueError(f"exec target e must be in [0, 1], got {self.exec_target}")
        if self.macs_scope not in MACS_SCOPES:
            raise ValueError(f"macs_scope must be one of {MACS_SCOPES}, got {self.macs_scope!r}")
        if self.path_balance < 0:
            raise ValueError(f"path_balance must be >= 0, got {self.path_balance}")
        if self.dual_step < 0:
            raise ValueError(f"dual_step must be >= 0, got {self.dual_step}")


@dataclass
class LossOutput:
    total: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)  # detached, for logging


class DMNNLoss:
    """Eqn 16: α1·L_ctg + α2·(L_exec + L_flops) + α3·L_cls. Static models get L_cls only.

    With ``dual_step`` η > 0, L_res also gets λ·(f/f_total − r) and λ += η·(f/f_total − r)
    after every training step (dual ascent). Not in the paper: eqn 14's quadratic alone pulls
    with 2·(f/f_total − r), which vanishes near r, so the classification loss's steady pull
    toward more compute leaves the ratio off target by a margin that depends on the data; λ
    integrates the error until the mean ratio is r. λ is checkpointed (exact resume).
    """

    def __init__(self, config: LossConfig) -> None:
        self.config = config
        self.dual = 0.0  # λ

    def state_dict(self) -> dict[str, float]:
        return {"dual": self.dual}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.dual = float(state.get("dual", 0.0))

    def __call__(
        self, logits: Tensor, routing: Routing, labels: Tensor, categories: Tensor | None = None
    ) -> LossOutput:
        cfg = self.config
        cls = F.cross_entropy(logits, labels)
        total = cfg.alpha_cls * cls
        parts = {"cls": cls.detach()}
        dynamic = bool(routing.gated_blocks)
        if dynamic:
            e = cfg.target_rate if cfg.exec_target is None else cfg.exec_target
            l_exec = exec_loss(routing.gates, e)
            l_flops = flops_loss(routing, cfg.target_rate, cfg.macs_scope)
            res = l_exec + l_flops
            parts.update(exec=l_exec.detach(), flops=l_flops.detach())
            if cfg.dual_step:
                gap = macs_fraction(routing, cfg.macs_scope).float() - cfg.target_rate
                res = res + self.dual * gap
                parts["dual"] = torch.tensor(self.dual)
                # only a training step whose gates can follow (not eval, not forced gates)
                if logits.requires_grad and any(g is not None and g.requires_grad
                                                for g in routing.gates):
                    self.dual += cfg.dual_step * gap.item()
            if cfg.path_balance:
                l_bal = path_balance_loss(routing.gates, e)
                res = res + cfg.path_balance * l_bal
                parts["balance"] = l_bal.detach()
            total = total + cfg.alpha_res * res
        has_heads = any(c is not None for c in routing.category_logits)
        if dynamic and cfg.category_supervision and has_heads:
            if categories is None:
                raise ValueError("category supervision needs category labels for the batch")
            weights = stage_weights(routing.stages, cfg.ctg_base, cfg.ctg_factor)
            l_ctg = category_loss(routing.category_logits, weights, categories)
            total = total + cfg.alpha_ctg * l_ctg
            parts["ctg"] = l_ctg.detach()
        parts["total"] = total.detach()
        return LossOutput(total=total, parts=parts)
