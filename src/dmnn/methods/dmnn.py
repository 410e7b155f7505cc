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
from ..errors import UsageError
from ..execution.forcing import force_gates
from ..network.gate import Gate, GateDecision
from ..network.gumbel import on_gates
from ..network.routing import MACS_SCOPES, Routing, execution_rates
from .base import (
    DualStep,
    EpochSetup,
    GumbelGates,
    Loss,
    LossConfig,
    LossOutput,
    Method,
    RunSettings,
    SubBlocks,
)
from .objective import DualAscent, gates_learn

if TYPE_CHECKING:
    from ..data import DataBundle
    from ..network.dynamic_net import DynamicNet


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
class DMNNOptions(SubBlocks, GumbelGates, DualStep):
    """Every option of DMNN: the keyword arguments of every ``dmnn_*`` model (N, d, the
    previous-state input, K, τ, the gates' initial bias) and, ``model=False``, its training
    specifics and its loss terms (eqns 9–16) with our two routing guards."""

    hidden_dim: int = option(32, min=1, help="DMNN: controller hidden width d.")
    prev_state: bool = option(True, help="DMNN: controller previous-state input (ablation).")
    num_categories: int = option(0, min=0, cli=False)  # K: from the data's category map
    gate_warmup_epochs: int = option(0, min=0, model=False, help=(
        "DMNN: first epochs with every sub-block on (no gating)."))
    exec_target: float | None = option(None, min=0.0, max=1.0, label="exec target e",
                                       model=False, help=(
        "DMNN: e, the target execution rate of eqn 12 (default: e = r, as in the paper)."))
    alpha_ctg: float = option(1.0, min=0.0, model=False,
                              help="DMNN: α1, weight of the category loss.")
    ctg_base: float = option(1e-4, min=0.0, model=False,
                             help="DMNN: α_l of the first stage (eqn 10).")
    ctg_factor: float = option(10.0, min=0.0, model=False,
                               help="DMNN: α_l growth per stage (eqn 10).")
    category_supervision: bool = option(True, flag="--category-loss/--no-category-loss",
                                        model=False, help="DMNN: category supervision (ablation).")
    macs_scope: str = option("network", choices=MACS_SCOPES, model=False, help=(
        "DMNN: network (default) | dynamic: what f_total covers."))
    path_balance: float = option(0.0, min=0.0, model=False, help=(
        "DMNN: weight of the per-sub-block rate term (0: the paper's loss)."))

    def make_gate(self, index: int, in_channels: int, num_sub_blocks: int, width: int) -> Gate:
        return DMNNController(
            in_channels, num_sub_blocks, self.hidden_dim, prev_state=self.prev_state,
            first=index == 0, num_categories=self.num_categories, tau=self.tau,
            gate_bias=self.gate_bias,
        )

    def exec_rate_target(self, target_rate: float) -> float:
        """e of eqn 12: ``exec_target``, else r."""
        return target_rate if self.exec_target is None else self.exec_target


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


class DMNNLoss(Loss):
    """Eqn 16: α1·L_ctg + α2·(L_exec + L_flops) + α3·L_cls (L_cls only without gates).

    With ``dual_step`` η > 0, L_res also gets λ·(f/f_total − r) and λ += η·(f/f_total − r)
    after every training step (dual ascent). Not in the paper: eqn 14's quadratic alone pulls
    with 2·(f/f_total − r), which vanishes near r, so the classification loss's steady pull
    toward more compute leaves the ratio off target by a margin that depends on the data; λ
    integrates the error until the mean ratio is r. λ is checkpointed (exact resume).
    """

    def __init__(self, options: DMNNOptions, loss: LossConfig | None = None) -> None:
        self.options, self.config = options, loss or LossConfig()
        self.multiplier = DualAscent(options.dual_step)

    @property
    def dual(self) -> float:
        """λ."""
        return float(self.multiplier)

    def state_dict(self) -> dict[str, float]:
        return self.multiplier.state_dict()

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.multiplier.load_state_dict(state)

    def terms(
        self, logits: Tensor, routing: Routing, labels: Tensor, categories: Tensor | None = None
    ) -> LossOutput:
        cfg, opts = self.config, self.options
        cls = F.cross_entropy(logits, labels)
        total = cfg.alpha_cls * cls
        parts = {"cls": cls.detach()}
        dynamic = bool(routing.gated_blocks)
        if dynamic:
            e = opts.exec_rate_target(cfg.target_rate)
            res = torch.zeros((), device=logits.device)
            # eqn 12 holds the execution rate at e = r: a MACs target; under a latency budget
            # r is a time ratio, so the term applies only with an explicit --exec-target
            if self.budget.name == "macs" or opts.exec_target is not None:
                l_exec = exec_loss(routing.gates, e)
                res = l_exec
                parts["exec"] = l_exec.detach()
            fraction = self.fraction(routing, opts.macs_scope)
            l_flops = (fraction - cfg.target_rate) ** 2  # eqn 14 (or the latency fraction's)
            res = res + l_flops
            parts["flops" if self.budget.name == "macs" else "latency"] = l_flops.detach()
            if opts.dual_step:
                term, parts["dual"] = self.multiplier.term(fraction - cfg.target_rate,
                                                           gates_learn(logits, routing))
                res = res + term
            if opts.path_balance:
                l_bal = path_balance_loss(routing.gates, e)
                res = res + opts.path_balance * l_bal
                parts["balance"] = l_bal.detach()
            total = total + cfg.alpha_res * res
        has_heads = any(c is not None for c in routing.category_logits)
        if dynamic and opts.category_supervision and has_heads:
            if categories is None:
                raise UsageError("category supervision needs category labels for the batch")
            weights = stage_weights(routing.stages, opts.ctg_base, opts.ctg_factor)
            l_ctg = category_loss(routing.category_logits, weights, categories)
            total = total + opts.alpha_ctg * l_ctg
            parts["ctg"] = l_ctg.detach()
        parts["total"] = total.detach()
        return LossOutput(total=total, parts=parts)


class DMNN(Method):
    """``dmnn_*``: N sub-blocks per block, a controller per block (§3)."""

    name = "dmnn"
    options = DMNNOptions
    doc = "DMNN variant (N sub-blocks)"
    # the best DMNN at r = 0.3, 0.5, 0.7 and 0.9 on the proxy, λ holding r at each
    # (results/frontier/README.md; proxy/dmnn_r*_pe_dual*.json)
    default_recipe = "paper-entropy-dual"

    def recipe_for(self, budget: str) -> str | None:
        """Under a latency budget, no gate entropy (``paper-dual``): with it the gates
        saturated before the latency term moved them, and both proxy runs missed their target
        (predicted 1.023 for 0.75, 0.729 for 0.65); without it the run held 0.758."""
        return "paper-dual" if budget == "latency" else self.default_recipe

    def model_kwargs(self, cfg: RunSettings, data: DataBundle) -> dict[str, Any]:
        """The configured model options; K from the data's categories (0 without category
        supervision: no category heads)."""
        return {**cfg.options.to_dict(), "num_categories":
                data.num_categories if cfg.options.category_supervision else 0}

    def check_config(self, cfg: RunSettings) -> None:
        if cfg.loss.budget == "latency" and cfg.options.macs_scope != "network":
            raise UsageError("--macs-scope dynamic is a MACs budget's scope: drop it with "
                             "--budget latency (latency is the whole network's)")
        warmup = cfg.options.gate_warmup_epochs
        if warmup and not 0 < warmup < cfg.epochs:
            raise UsageError(f"gate_warmup_epochs must be in [0, epochs), got "
                             f"{warmup} with {cfg.epochs} epochs")

    def build_loss(self, cfg: RunSettings, total_steps: int) -> Loss:
        return DMNNLoss(cfg.options, cfg.loss)

    def uses_categories(self, cfg: RunSettings) -> bool:
        return cfg.options.category_supervision

    def calibration_metric(self, cfg: RunSettings) -> str:
        """The MACs ratio that the resource loss holds at r, over ``macs_scope``."""
        return "macs_ratio" if cfg.options.macs_scope == "network" else "macs_ratio_dynamic"

    def epoch_setup(self, model: DynamicNet, cfg: RunSettings, epoch: int) -> EpochSetup:
        """Gate warm-up: every sub-block trains before the gates start choosing between them
        (forced gates carry no gradient, so λ holds still too)."""
        if epoch < cfg.options.gate_warmup_epochs:
            return EpochSetup(forward=lambda: force_gates(model, "on"))
        return EpochSetup()


METHOD = DMNN()
