"""DMNN (Su et al.; dmnn-paper.txt), the method the library is named after, in one file.

* The controller (§3.2, eqns 5–8): GAP → FC, plus the previous controller's state, deciding per
  image which of a block's N sub-blocks run (:class:`DMNNController`).
* The model options of every ``dmnn_*`` model (:class:`DMNNOptions`); the sub-block split itself
  is the backbones' (:mod:`dmnn.network.split`).
* The losses (§3.2–3.3): category loss (eqns 9–10), resource loss (eqns 11–15), their total
  (eqn 16), and our two routing guards (path balance, the dual multiplier λ).
* Training specifics: gate warm-up (first epochs with every sub-block on); the calibration metric.

What f_total covers: with ``macs_scope="network"`` (default) f is the batch-mean MACs of the whole
network for each sample (stem, head, shortcuts, controllers and the executed sub-blocks) and
f_total the whole network with every sub-block on, so r is the whole-network MACs ratio that the
evaluator reports. With ``macs_scope="dynamic"`` f and f_total cover only the gated sub-blocks,
eqn 13 literally. Both ratios are reported in training logs either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..checks import check_int, check_number, option
from ..distributed.batch_stats import batch_means
from ..execution.forcing import force_gates
from ..network.gate import Gate, GateDecision
from ..network.gumbel import on_gates
from ..network.routing import Routing, execution_rates
from .base import EpochSetup, Loss, LossConfig, LossOutput, Method, MethodOptions

if TYPE_CHECKING:
    from ..data import DataBundle
    from ..network.dynamic_net import DynamicNet
    from ..train.config import TrainConfig


class DMNNController(Gate):
    """Decides per sample which of the block's N sub-blocks run.

    z = GAP(X_{l−1}) (eqn 5); V = ReLU(W1·z) (eqn 6); h′ = ReLU(W2·h_{l−1}), h_l = V + h′ (eqn 7;
    the first controller, or ``prev_state=False``, uses h_l = V); g = W3·h_l + b3 as N×2 [off, on]
    logits; gates by eqn 8. The on-logit bias starts at ``gate_bias`` so that sub-blocks start
    mostly on: a network that begins all-off gets no gradient through its sub-blocks.
    """

    calibratable = True

    def __init__(
        self,
        in_channels: int,
        num_sub_blocks: int,
        hidden_dim: int = 32,
        *,
        prev_state: bool = True,
        first: bool = False,
        num_categories: int = 0,
        tau: float = 1.0,
        gate_bias: float = 2.0,
    ) -> None:
        super().__init__()
        check_int("hidden_dim", hidden_dim, 1)
        check_int("num_categories", num_categories, 0)
        check_number("tau", tau, 0.0, lo_open=True)
        self.num_sub_blocks, self.hidden_dim, self.tau = num_sub_blocks, hidden_dim, tau
        self.fast_inference = True  # :meth:`infer` without autograd; False times the plain path
        self._plain: tuple[tuple[int, ...], tuple[Tensor | None, ...]] | None = None
        self.fc_in = nn.Linear(in_channels, hidden_dim)  # W1
        self.fc_prev = nn.Linear(hidden_dim, hidden_dim) if prev_state and not first else None  # W2
        self.fc_gate = nn.Linear(hidden_dim, 2 * num_sub_blocks)  # W3, b3
        # trains the controller toward the image's coarse category (eqn 9); training only
        self.category_head = nn.Linear(hidden_dim, num_categories) if num_categories else None
        with torch.no_grad():
            bias = self.fc_gate.bias.view(num_sub_blocks, 2)
            bias[:, 0] = 0.0
            bias[:, 1] = gate_bias

    def hidden(self, x: Tensor, state: Tensor | None) -> Tensor:
        """h_l of eqns 5–7 (F.linear on the module weights: these layers are tiny, so per-call
        overhead is what costs at batch 1)."""
        z = x.mean(dim=(2, 3))
        h = F.relu(F.linear(z, self.fc_in.weight, self.fc_in.bias))
        if self.fc_prev is not None and state is not None:
            h = h + F.relu(F.linear(state, self.fc_prev.weight, self.fc_prev.bias))
        return h

    def forward(self, x: Tensor, state: Tensor | None = None) -> GateDecision:
        if self.fast_inference and not self.training and not torch.is_grad_enabled():
            return self.infer(x, state)
        h = self.hidden(x, state)
        logits = F.linear(h, self.fc_gate.weight, self.fc_gate.bias)
        logits = logits.view(-1, self.num_sub_blocks, 2)
        gates = on_gates(logits, self.training, self.tau, self.noise_scale)
        category = None
        if self.training and self.category_head is not None:
            category = self.category_head(h)
        # probs are derived from the logits when routing is requested (GateDecision.on_probs)
        return GateDecision(gates=gates, state=h, category_logits=category,
                            extras={"logits": logits})

    def plain_weights(self) -> tuple[Tensor | None, ...]:
        """W1, b1, W2, b2, W3, b3 as plain tensors sharing the parameters' storage.

        Why: at batch 1 every op counts, and an op on a ``Parameter`` costs 2–3 µs more than on a
        plain tensor even under ``inference_mode``. In-place updates (optimizer, calibration,
        ``load_state_dict``) show through the shared storage; a moved or replaced parameter
        changes its data pointer, which rebuilds the views."""
        params = [self.fc_in.weight, self.fc_in.bias, self.fc_gate.weight, self.fc_gate.bias]
        if self.fc_prev is not None:
            params += [self.fc_prev.weight, self.fc_prev.bias]
        key = tuple(p.data_ptr() for p in params)
        if self._plain is None or self._plain[0] != key:
            w1, b1, w3, b3, *prev = (p.detach() for p in params)
            w2, b2 = prev if prev else (None, None)
            self._plain = (key, (w1, b1, w2, b2, w3, b3))
        return self._plain[1]

    def infer(self, x: Tensor, state: Tensor | None = None) -> GateDecision:
        """Eval without autograd: eqns 5–8 with the noise-free argmax, on :meth:`plain_weights`
        and in-place ReLUs. Same decisions as :meth:`forward` (tested)."""
        w1, b1, w2, b2, w3, b3 = self.plain_weights()
        h = F.linear(x.mean(dim=(2, 3)), w1, b1).relu_()
        if w2 is not None and state is not None:
            h = h + F.linear(state, w2, b2).relu_()
        logits = F.linear(h, w3, b3).view(-1, self.num_sub_blocks, 2)
        return GateDecision(gates=logits.argmax(dim=-1).to(logits.dtype), state=h,
                            extras={"logits": logits})

    @torch.no_grad()
    def shift_on_logit(self, delta: float) -> None:
        """Add ``delta`` to every sub-block's on-logit bias: the decision threshold moves from
        p_on > 0.5 to p_on > sigmoid(-delta) (see :mod:`dmnn.train.calibration`)."""
        self.fc_gate.bias.view(self.num_sub_blocks, 2)[:, 1] += delta

    def training_only_modules(self) -> list[nn.Module]:
        return [self.category_head] if self.category_head is not None else []

    @torch.no_grad()
    def decide_all_on(self) -> bool:
        """W3 = 0 and on-bias > off-bias: every sub-block on for any input, decided for real."""
        self.fc_gate.weight.zero_()
        self.fc_gate.bias.view(-1, 2)[:, 0] = 0.0
        self.fc_gate.bias.view(-1, 2)[:, 1] = 1.0
        return True

    def inference_macs(self, in_shape: tuple[int, ...]) -> int:
        """MACs of W1, W2 and W3 at inference (GAP is not counted; category heads do not run)."""
        macs = in_shape[0] * self.hidden_dim + self.hidden_dim * 2 * self.num_sub_blocks
        if self.fc_prev is not None:
            macs += self.hidden_dim * self.hidden_dim
        return macs


@dataclass(frozen=True)
class DMNNOptions(MethodOptions):
    """Keyword arguments of every ``dmnn_*`` model.

    num_sub_blocks: N, sub-blocks per residual block.
    hidden_dim: d, controller hidden width.
    prev_state: feed the previous controller's h into the next (eqn 7); off for the ablation.
    num_categories: K, coarse categories for the controllers' category heads; 0 turns them off.
    tau: Gumbel-softmax temperature in training.
    gate_bias: initial on-minus-off logit of every gate (positive = start mostly on).
    """

    num_sub_blocks: int = option(2, min=1)
    hidden_dim: int = option(32, min=1)
    prev_state: bool = True
    num_categories: int = option(0, min=0)
    tau: float = option(1.0, min=0.0, lo_open=True)
    gate_bias: float = 2.0

    def make_gate(self, index: int, in_channels: int, num_sub_blocks: int, width: int) -> Gate:
        return DMNNController(
            in_channels, num_sub_blocks, self.hidden_dim, prev_state=self.prev_state,
            first=index == 0, num_categories=self.num_categories, tau=self.tau,
            gate_bias=self.gate_bias,
        )


def stage_weights(stages: Sequence[int], base: float = 1e-4, factor: float = 10.0) -> list[float]:
    """α_l of eqn 10: ``base`` for the first stage, ×``factor`` for each later stage."""
    first = min(stages) if stages else 0
    return [base * factor ** (s - first) for s in stages]


def category_loss(
    category_logits: Sequence[Tensor | None], weights: Sequence[float], categories: Tensor
) -> Tensor:
    """Eqn 10: Σ_l α_l · CE(p_l, k) with eqn 9's cross-entropy per controller (batch mean; the
    global batch under data parallelism)."""
    used = [(logits, alpha) for logits, alpha in zip(category_logits, weights, strict=True)
            if logits is not None]
    if not used:
        return categories.new_zeros((), dtype=torch.float32)
    means = batch_means([F.cross_entropy(logits.float(), categories, reduction="none")
                         for logits, _ in used])
    total = used[0][1] * means[0]
    for (_, alpha), term in zip(used[1:], means[1:], strict=True):
        total = total + alpha * term
    return total


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
    rates = batch_means([g.float() for g in gates if g is not None], dim=0)
    terms = [((target - z) ** 2).mean() for z in rates]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def flops_loss(routing: Routing, target: float, scope: str = "network") -> Tensor:
    """Eqn 14: (f / f_total − r)²."""
    return (routing.macs_fraction(scope).float() - target) ** 2


class DMNNLoss(Loss):
    """Eqn 16: α1·L_ctg + α2·(L_exec + L_flops) + α3·L_cls (L_cls only without gates).

    With ``dual_step`` η > 0, L_res also gets λ·(f/f_total − r) and λ += η·(f/f_total − r)
    after every training step (dual ascent). Not in the paper: eqn 14's quadratic alone pulls
    with 2·(f/f_total − r), which vanishes near r, so the classification loss's steady pull
    toward more compute leaves the ratio off target by a margin that depends on the data; λ
    integrates the error until the mean ratio is r. λ is checkpointed (exact resume).
    """

    def __init__(self, config: LossConfig) -> None:
        self.config = config
        self.dual: Tensor | float = 0.0  # λ (a float64 tensor on the device once training runs)

    def state_dict(self) -> dict[str, float]:
        return {"dual": float(self.dual)}

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
            e = cfg.exec_rate_target
            l_exec = exec_loss(routing.gates, e)
            l_flops = flops_loss(routing, cfg.target_rate, cfg.macs_scope)
            res = l_exec + l_flops
            parts.update(exec=l_exec.detach(), flops=l_flops.detach())
            if cfg.dual_step:
                gap = routing.macs_fraction(cfg.macs_scope).float() - cfg.target_rate
                dual = torch.as_tensor(self.dual, dtype=torch.float64, device=gap.device)
                res = res + dual.to(gap.dtype) * gap
                parts["dual"] = dual.detach().clone()
                # only a training step whose gates can follow (not eval, not forced gates);
                # kept on the device: no host sync per step
                if logits.requires_grad and any(g is not None and g.requires_grad
                                                for g in routing.gates):
                    self.dual = dual + cfg.dual_step * gap.detach().double()
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


class DMNN(Method):
    """``dmnn_*``: N sub-blocks per block, a controller per block (§3)."""

    family = "dmnn"
    prefix = "dmnn"
    options = DMNNOptions
    owns = ("gate_warmup_epochs",)
    doc = "DMNN variant (N sub-blocks)"

    def model_kwargs(self, cfg: TrainConfig, data: DataBundle) -> dict[str, Any]:
        return {
            "num_sub_blocks": cfg.num_sub_blocks, "hidden_dim": cfg.hidden_dim,
            "prev_state": cfg.prev_state,
            "num_categories": data.num_categories if cfg.loss.category_supervision else 0,
            "tau": cfg.tau, "gate_bias": cfg.gate_bias,
        }

    def check_config(self, cfg: TrainConfig) -> None:
        if cfg.gate_warmup_epochs and not 0 < cfg.gate_warmup_epochs < cfg.epochs:
            raise ValueError(f"gate_warmup_epochs must be in [0, epochs), got "
                             f"{cfg.gate_warmup_epochs} with {cfg.epochs} epochs")

    def build_loss(self, cfg: TrainConfig, total_steps: int) -> Loss:
        return DMNNLoss(cfg.loss)

    def uses_categories(self, cfg: TrainConfig) -> bool:
        return cfg.loss.category_supervision

    def calibration_metric(self, cfg: TrainConfig) -> str:
        """The MACs ratio that the resource loss holds at r, over ``macs_scope``."""
        return "macs_ratio" if cfg.loss.macs_scope == "network" else "macs_ratio_dynamic"

    def epoch_setup(self, model: DynamicNet, cfg: TrainConfig, epoch: int) -> EpochSetup:
        """Gate warm-up: every sub-block trains before the gates start choosing between them
        (forced gates carry no gradient, so λ holds still too)."""
        if epoch < cfg.gate_warmup_epochs:
            return EpochSetup(forward=lambda: force_gates(model, "on"))
        return EpochSetup()


METHOD = DMNN()
