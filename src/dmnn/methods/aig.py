"""ConvNet-AIG (Veit & Belongie, ECCV 2018): one gate per residual block.

Gate: GAP → FC(C → 16) → BN → ReLU → FC(16 → 2) [off, on] logits; Gumbel-softmax with a hard
straight-through sample in training, argmax at test. The whole residual function is one path
(N = 1) that runs or is skipped; the shortcut always runs. Loss: classification + the target-rate
loss mean_l (t − z_l)², z_l the fraction of the batch executing block l.

Where we differ from the original code: the original gates only ResNet blocks; on MobileNetV2 we
gate every inverted residual and give the shape-changing ones a projection shortcut, as for DMNN.
Initial biases follow the original ([off, on] = [0.1, gate_bias], open at the start).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_rate, option
from ..network.gate import Gate, GateDecision
from ..network.gumbel import on_gates
from ..network.routing import Routing, execution_rates
from .base import DualStep, GumbelGates, Loss, LossOutput, Method, RunSettings
from .objective import DualAscent, gates_learn


class AIGGate(Gate):
    """The ConvNet-AIG gate of one block."""

    calibratable = True

    def __init__(self, in_channels: int, hidden: int = 16, tau: float = 1.0,
                 gate_bias: float = 2.0) -> None:
        super().__init__()
        self.tau, self.hidden = tau, hidden
        self.fc1 = nn.Linear(in_channels, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, 2)
        with torch.no_grad():
            self.fc2.bias.copy_(torch.tensor([0.1, gate_bias]))

    def forward(self, x: Tensor, state: Tensor | None = None) -> GateDecision:
        h = F.relu(self.bn(self.fc1(x.mean(dim=(2, 3)))))
        logits = self.fc2(h).view(-1, 1, 2)
        gates = on_gates(logits, self.training, self.tau, self.noise_scale)
        return GateDecision(gates=gates, extras={"logits": logits})  # probs: on_probs()

    @torch.no_grad()
    def shift_on_logit(self, delta: float) -> None:
        """Add ``delta`` to the on-logit bias (see :mod:`dmnn.train.calibration`)."""
        self.fc2.bias[1] += delta

    def inference_macs(self, in_shape: tuple[int, ...]) -> int:
        """FC1 and FC2 (GAP and BN are not MACs in our convention)."""
        return in_shape[0] * self.hidden + self.hidden * 2


@dataclass(frozen=True)
class AIGOptions(GumbelGates, DualStep):
    """Keyword arguments of every ``aig_*`` model."""

    gate_hidden: int = option(16, min=1, help="ConvNet-AIG: gate hidden width.")

    def make_gate(self, index: int, in_channels: int, num_sub_blocks: int, width: int) -> Gate:
        return AIGGate(in_channels, self.gate_hidden, self.tau, self.gate_bias)


def target_rate_loss(gates: Sequence[Tensor | None], target: float) -> Tensor:
    """ConvNet-AIG's L_target = mean_l (t − z_l)²."""
    return ((target - execution_rates(gates)) ** 2).mean()


class AIGLoss(Loss):
    """L = α_cls·CE + α_res·mean_l (t − z_l)²; with ``--budget latency``,
    α_res·(expected latency fraction − t)² in place of the rate term. With ``dual_step`` η > 0
    (not in the paper) also α_res·λ·gap, λ += η·gap (:class:`DualAscent`), the gap being the
    mean execution rate's (or the latency fraction's) distance from t."""

    def __init__(self, target: float, alpha_res: float = 1.0, alpha_cls: float = 1.0,
                 dual_step: float = 0.0) -> None:
        check_rate(target, "target rate t")
        self.target, self.alpha_res, self.alpha_cls = target, alpha_res, alpha_cls
        self.multiplier = DualAscent(dual_step)

    def state_dict(self) -> dict[str, float]:
        return self.multiplier.state_dict()

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.multiplier.load_state_dict(state)

    def terms(
        self, logits: Tensor, routing: Routing, labels: Tensor, categories: Tensor | None = None
    ) -> LossOutput:
        cls = F.cross_entropy(logits, labels)
        if self.budget.name == "macs":
            rate = target_rate_loss(routing.gates, self.target)
            gated = any(g is not None for g in routing.gates)
            gap = execution_rates(routing.gates).mean() - self.target if gated else None
        else:  # a time budget has no per-block rate: the square of its fraction's gap
            gap = self.fraction(routing) - self.target
            rate = gap ** 2
        parts = {"cls": cls.detach(), "target": rate.detach()}
        res = rate
        if self.multiplier.step and gap is not None:
            term, parts["dual"] = self.multiplier.term(gap, gates_learn(logits, routing))
            res = res + term
        total = self.alpha_cls * cls + self.alpha_res * res
        parts["total"] = total.detach()
        return LossOutput(total=total, parts=parts)


class AIG(Method):
    """``aig_*``: one gate per block, held at the target execution rate t = r."""

    name = "aig"
    options = AIGOptions
    doc = "ConvNet-AIG variant (one gate per block)"

    def build_loss(self, cfg: RunSettings, total_steps: int) -> Loss:
        return AIGLoss(cfg.loss.target_rate, alpha_res=cfg.loss.alpha_res,
                       alpha_cls=cfg.loss.alpha_cls, dual_step=cfg.options.dual_step)

    def calibration_metric(self, cfg: RunSettings) -> str:
        """Its loss targets the execution rate, so calibration holds that at r."""
        return "exec_rate"


METHOD = AIG()
