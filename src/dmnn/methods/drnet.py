"""DRNet: dynamic routing with path diversity and consistency (Wang, Qin & Li; drnet-paper.md).

Router (Fig. 2b): GAP → linear → linear → 2 logits R(x) = [execute, skip]. Eqn 3:
r = softmax(β·softmax(R(x)))[0], a sharpened execute probability (for two classes it equals
sigmoid(β·(p_exec − p_skip))). Training mixes, eqn 4: x_{i+1} = r·F(x_i) + (1 − r)·x_i with F the
whole residual block; test, eqn 11: the block runs iff r ≥ 0.5 (else its input passes on through
the shortcut). Losses, eqn 9: L_cls + λ·L_consistency (eqn 5) + α·L_diversity (eqn 6) +
μ·L_cost (eqn 8) + γ·L_reg (eqn 10) over M augmented copies of every sample.

Where we differ or had to choose: the paper gives neither the router's hidden width nor β; we use
16 (ReLU between the two linears) and β = 10. c_i of eqn 8 is block i's MACs from the MACs table
divided by the whole network's MACs (so μ does not depend on the model's size). Eqn 10's
"‖r_i − mean(route_i,:)‖" is read as each copy's route against its sample's mean route (eqn 5
without margin). The paper adapts μ during training "to control the computational cost
precisely" without saying how; we multiply μ by exp(κ·(f/f_total − r)) after every step
(κ = 0.05), so the MACs ratio settles at the target r like the other methods'. Blocks whose
shape changes mix with their (projection or zero-padding) shortcut instead of the identity.

§3.4 admits the gap between the convex training mix and the hard test routing and suggests
fine-tuning "by freezing the weight of routers". We do that inside the shared schedule: the last
``router_finetune_epochs`` (default 20 % of the epochs) train with eqn 11's hard routing and frozen
routers (:func:`dmnn.gates.set_hard_routing`). Without it a CIFAR-10 run tested at 26.6 % while
training at 78.6 % (epoch 6): its routers sit mostly undecided (0.1 < r < 0.9 for most images), so
the BN statistics and the next blocks only ever saw mixtures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..gates import GateDecision
from ..losses import LossOutput, macs_fraction
from ..models.factory import register_method
from ..models.options import MethodOptions
from ..routing import Routing


class DRNetRouter(nn.Module):
    """GAP → linear → ReLU → linear → [execute, skip] logits; r by eqn 3."""

    mixing = "convex"  # the block computes x_{i+1} = r·F(x_i) + (1 − r)·x_i

    def __init__(self, in_channels: int, hidden: int = 16, beta: float = 10.0) -> None:
        super().__init__()
        self.hidden, self.beta = hidden, beta
        self.hard_routing = False  # eqn 11 in training too: §3.4's router-frozen fine-tuning
        self.fc1 = nn.Linear(in_channels, hidden)
        self.fc2 = nn.Linear(hidden, 2)

    def route(self, x: Tensor) -> Tensor:
        """Eqn 3: r = softmax(β·softmax(R(x)))[0], shape (B, 1)."""
        logits = self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3)))))
        return F.softmax(self.beta * F.softmax(logits, dim=-1), dim=-1)[:, :1]

    def forward(self, x: Tensor, state: Tensor | None = None) -> GateDecision:
        r = self.route(x)
        soft = self.training and not self.hard_routing
        gates = r if soft else (r >= 0.5).to(r.dtype)  # eqn 11 at test
        return GateDecision(gates=gates, probs=r.detach(), extras={"route": r})

    @torch.no_grad()
    def shift_on_logit(self, delta: float) -> None:
        """Add ``delta`` to the execute logit's bias: eqn 11's r ≥ 0.5 holds iff
        R_exec ≥ R_skip, so the block now runs iff R_exec + δ ≥ R_skip
        (see :mod:`dmnn.gate_calibration`)."""
        self.fc2.bias[0] += delta

    def inference_macs(self, in_shape: tuple[int, ...]) -> int:
        return in_shape[0] * self.hidden + self.hidden * 2


@dataclass(frozen=True)
class DRNetOptions(MethodOptions):
    """Keyword arguments of every ``drnet_*`` model."""

    router_hidden: int = 16
    beta: float = 10.0

    def __post_init__(self) -> None:
        if not isinstance(self.router_hidden, int) or self.router_hidden < 1:
            raise ValueError(f"router_hidden must be an integer >= 1, got {self.router_hidden!r}")
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta!r}")

    def make_gate(self, index: int, in_channels: int, num_paths: int, width: int) -> nn.Module:
        return DRNetRouter(in_channels, self.router_hidden, self.beta)


def routes(gates: Sequence[Tensor | None], copies: int) -> Tensor:
    """(M, L, n) routes: copy j of sample i over the n gated blocks (copy-major batches)."""
    r = torch.cat([g for g in gates if g is not None], dim=1)
    return r.view(copies, r.shape[0] // copies, r.shape[1])


def consistency_loss(route: Tensor, margin: float) -> Tensor:
    """Eqn 5: mean over samples and copies of [‖route_ij − mean_j route_i·‖ − d_c]_+²."""
    center = route.mean(dim=0, keepdim=True)
    dist = (route - center).norm(dim=-1)
    return F.relu(dist - margin).pow(2).mean()


def diversity_loss(route: Tensor, margin: float) -> Tensor:
    """Eqn 6: mean over pairs i ≠ j of [d_d − ‖mean route_i − mean route_j‖]_+²."""
    center = route.mean(dim=0)  # (L, n)
    n = center.shape[0]
    if n < 2:
        return center.new_zeros(())
    dist = torch.cdist(center, center)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=center.device)
    return F.relu(margin - dist[off_diagonal]).pow(2).mean()


def cost_loss(routing: Routing) -> Tensor:
    """Eqn 8: Σ_i c_i·r_i with c_i = block MACs ÷ network MACs, batch mean."""
    table = routing.table
    total: Tensor | None = None
    for g, cost, gated in zip(routing.gates, table.paths, table.gated, strict=True):
        if g is None or not gated:
            continue
        term = g[:, 0] * (sum(cost) / table.full)
        total = term if total is None else total + term
    return total.mean() if total is not None else torch.zeros(())


def reg_loss(route: Tensor) -> Tensor:
    """Eqn 10 (our reading): mean over copies of ‖route_ij − mean_j route_i·‖₂."""
    return (route - route.mean(dim=0, keepdim=True)).norm(dim=-1).mean()


class DRNetLoss:
    """Eqn 9 with an adaptive μ that holds the MACs ratio at the target r."""

    def __init__(
        self, target: float, copies: int, *, lam: float = 0.2, alpha: float = 0.2,
        mu: float = 0.05, gamma: float = 0.5, d_c: float = 0.2, d_d: float = 0.5,
        kappa: float = 0.05,
    ) -> None:
        if not 0.0 < target <= 1.0:
            raise ValueError(f"target rate r must be in (0, 1], got {target}")
        if copies < 1:
            raise ValueError(f"copies (M) must be >= 1, got {copies}")
        self.target, self.copies = target, copies
        self.lam, self.alpha, self.mu, self.gamma = lam, alpha, mu, gamma
        self.d_c, self.d_d, self.kappa = d_c, d_d, kappa

    def state_dict(self) -> dict:
        """The adapted μ: checkpointed so that a resumed run continues exactly."""
        return {"mu": self.mu}

    def load_state_dict(self, state: dict) -> None:
        self.mu = float(state["mu"])

    def __call__(
        self, logits: Tensor, routing: Routing, labels: Tensor, categories: Tensor | None = None
    ) -> LossOutput:
        cls = F.cross_entropy(logits, labels)
        route = routes(routing.gates, self.copies)
        l_con = consistency_loss(route, self.d_c)
        l_div = diversity_loss(route, self.d_d)
        l_cost = cost_loss(routing)
        l_reg = reg_loss(route)
        total = (cls + self.lam * l_con + self.alpha * l_div + self.mu * l_cost
                 + self.gamma * l_reg)
        if l_cost.requires_grad:  # frozen hard routes: the cost is fixed, μ has nothing to steer
            ratio = macs_fraction(routing).item()
            self.mu *= math.exp(self.kappa * (ratio - self.target))  # adaptive cost weight
        parts = {"cls": cls.detach(), "consistency": l_con.detach(), "diversity": l_div.detach(),
                 "cost": l_cost.detach(), "reg": l_reg.detach(), "total": total.detach(),
                 "mu": torch.tensor(self.mu)}
        return LossOutput(total=total, parts=parts)


register_method("drnet", "drnet", DRNetOptions, "DRNet variant (one router per block)")
