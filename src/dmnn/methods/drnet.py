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
routers (:func:`set_hard_routing`). Without it a CIFAR-10 run tested at 26.6 % while
training at 78.6 % (epoch 6): its routers sit mostly undecided (0.1 < r < 0.9 for most images), so
the BN statistics and the next blocks only ever saw mixtures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_int, check_rate, option
from ..errors import UsageError
from ..execution.sparse import gather, run_rows
from ..network.gate import Gate, GateDecision
from ..network.routing import Routing
from .base import EpochSetup, Loss, LossOutput, Method, MethodOptions, RunSettings

if TYPE_CHECKING:
    from ..network.block import GatedBlock
    from ..network.dynamic_net import DynamicNet


class DRNetRouter(Gate):
    """GAP → linear → ReLU → linear → [execute, skip] logits; r by eqn 3.

    The block mixes by eqn 4, x_{i+1} = r·F(x_i) + (1 − r)·shortcut(x_i) (:meth:`execute`)."""

    calibratable = True

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
        (see :mod:`dmnn.train.calibration`)."""
        self.fc2.bias[0] += delta

    def execute(self, block: GatedBlock, x: Tensor, base: Tensor | None,
                decision: GateDecision) -> Tensor:
        """x_{l+1} = r·F(x) + (1 − r)·shortcut(x), F the whole block (eqn 4; one sub-block).

        Sparse at eval (binary r): rows with r = 1 get F on just those rows, the others keep the
        shortcut; F is never computed for a skipped row. Training under hard routing (the
        fine-tuning) runs sparse as well, so F's BN statistics come from the rows it will serve
        at test, not from rows it skips.
        """
        assert base is not None, "a gated block always has a shortcut"
        path, gates = block.paths[0], decision.gates
        if not block.runs_sparse(hard=not block.training or self.hard_routing):
            full = block.post_act(base + path(x))
            r = gates[:, :1].to(full.dtype).view(-1, *([1] * (full.dim() - 1)))
            return r * full + (1 - r) * base
        on = gates[:, 0] > 0.5
        return run_rows(on, int(on.sum()), x.shape[0],  # run_paths: BN folded at eval
                        lambda rows: block.post_act(block.run_paths(gather(x, rows), None,
                                                                    gather(base, rows))),
                        base, replace=True)

    def inference_macs(self, in_shape: tuple[int, ...]) -> int:
        return in_shape[0] * self.hidden + self.hidden * 2


@dataclass(frozen=True)
class DRNetOptions(MethodOptions):
    """Keyword arguments of every ``drnet_*`` model."""

    router_hidden: int = option(16, min=1, help="DRNet: router hidden width.")
    beta: float = option(10.0, min=0.0, lo_open=True, help=(
        "DRNet: β, the sharpening of eqn 3's execute probability."))
    copies: int = option(2, min=1, model=False, help=(
        "DRNet: augmented copies of every training sample (M)."))
    router_finetune_epochs: int | None = option(None, min=0, model=False, help=(
        "DRNet: last epochs trained with hard, frozen routers (default 20 %)."))

    def make_gate(self, index: int, in_channels: int, num_sub_blocks: int, width: int) -> Gate:
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


class DRNetLoss(Loss):
    """Eqn 9 with an adaptive μ that holds the MACs ratio at the target r."""

    def __init__(
        self, target: float, copies: int, *, lam: float = 0.2, alpha: float = 0.2,
        mu: float = 0.05, gamma: float = 0.5, d_c: float = 0.2, d_d: float = 0.5,
        kappa: float = 0.05,
    ) -> None:
        check_rate(target)
        check_int("copies (M)", copies, 1)
        self.target, self.copies = target, copies
        self.lam, self.alpha, self.mu, self.gamma = lam, alpha, mu, gamma
        self.d_c, self.d_d, self.kappa = d_c, d_d, kappa

    def state_dict(self) -> dict:
        """The adapted μ: checkpointed so that a resumed run continues exactly."""
        return {"mu": self.mu}

    def load_state_dict(self, state: dict) -> None:
        self.mu = float(state["mu"])

    def terms(
        self, logits: Tensor, routing: Routing, labels: Tensor, categories: Tensor | None = None
    ) -> LossOutput:
        cls = F.cross_entropy(logits, labels)
        route = routes(routing.gates, self.copies)
        l_con = consistency_loss(route, self.d_c)
        l_div = diversity_loss(route, self.d_d)
        # eqn 8 is the gated blocks' MACs fraction; a latency budget prices the same routes
        l_cost = cost_loss(routing) if self.budget.name == "macs" else self.fraction(routing)
        l_reg = reg_loss(route)
        total = (cls + self.lam * l_con + self.alpha * l_div + self.mu * l_cost
                 + self.gamma * l_reg)
        if l_cost.requires_grad:  # frozen hard routes: the cost is fixed, μ has nothing to steer
            ratio = self.fraction(routing).item()
            self.mu *= math.exp(self.kappa * (ratio - self.target))  # adaptive cost weight
        parts = {"cls": cls.detach(), "consistency": l_con.detach(), "diversity": l_div.detach(),
                 "cost": l_cost.detach(), "reg": l_reg.detach(), "total": total.detach(),
                 "mu": torch.tensor(self.mu)}
        return LossOutput(total=total, parts=parts)


def set_hard_routing(model: nn.Module, hard: bool) -> int:
    """Make the routers decide as at test time (eqn 11) in training too, and freeze them.

    Why: a router trained by a convex mix tests with a hard threshold; fine-tuning the network
    under the hard decisions closes that gap (§3.4). Returns how many routers it set.
    """
    routers = [m for m in model.modules() if isinstance(m, DRNetRouter)]
    for router in routers:
        router.hard_routing = hard
        router.requires_grad_(not hard)
    return len(routers)


class DRNet(Method):
    """``drnet_*``: one router per block, M augmented copies, router-frozen fine-tuning."""

    name = "drnet"
    options = DRNetOptions
    doc = "DRNet variant (one router per block)"

    def build_loss(self, cfg: RunSettings, total_steps: int) -> Loss:
        return DRNetLoss(cfg.loss.target_rate, copies=cfg.options.copies)

    def unused_parameters(self, cfg: RunSettings) -> bool:
        """Frozen routers in fine-tuning; under hard routing a block no row of a rank takes."""
        return True

    def train_copies(self, cfg: RunSettings) -> int:
        """Eqns 5–6 compare the M augmented copies of every sample within a batch."""
        return cfg.options.copies

    def calibration_metric(self, cfg: RunSettings) -> str:
        """μ adapts to the network MACs fraction, so calibration holds that at r."""
        return "macs_ratio"

    @staticmethod
    def router_finetune(cfg: RunSettings) -> int:
        """Epochs at the end of the schedule trained with hard, frozen routers (§3.4): the
        configured number, else 20 % of the epochs (at least 1; none for a one-epoch run)."""
        if cfg.options.router_finetune_epochs is not None:
            return cfg.options.router_finetune_epochs
        return 0 if cfg.epochs < 2 else max(1, round(0.2 * cfg.epochs))

    def check_config(self, cfg: RunSettings) -> None:
        n = cfg.options.router_finetune_epochs
        if n is not None and not 0 <= n < cfg.epochs:
            raise UsageError(f"router_finetune_epochs must be an integer in [0, epochs), got "
                             f"{n!r} with {cfg.epochs} epochs")

    def epoch_setup(self, model: DynamicNet, cfg: RunSettings, epoch: int) -> EpochSetup:
        """The last epochs fine-tune under the hard test routing with the routers frozen (μ
        holds still then: the cost of fixed routes has no gradient)."""
        finetune = self.router_finetune(cfg)
        if not finetune:
            return EpochSetup()
        hard = epoch >= cfg.epochs - finetune
        set_hard_routing(model, hard)
        return EpochSetup(record={"routers_frozen": int(hard)})


METHOD = DRNet()
