"""The training objective's shared parts, in one module: the loss settings every method reads
(:class:`LossConfig`), the levers the harness adds to any gated method's loss (``--distill``,
``--gate-entropy``: :class:`Levers`), the resource every method's budget measures
(:class:`MacsBudget`, the paper's; :class:`LatencyBudget`, ``--budget latency``) and eqn 14's
square (:func:`flops_loss`).

A method's :class:`~dmnn.methods.base.Loss` computes its own terms; the base class adds the
levers to them, so the whole objective of a step comes out of one call and the engine sums
nothing itself.

In-place distillation (slimmable / dynamic-slimmable networks): in the same training step the
all-on network learns from the labels and its logits teach the gated network.

Why: a gated network trained from scratch sees each sub-block on only part of the time and each
image through one sampled subnetwork; the all-on network's soft predictions are a denser target
than the one-hot label, and training the all-on network keeps every sub-block useful. The
teacher runs with the gates forced on (their decisions replaced, their cost real); its logits
are detached in the KL, so the student does not pull the teacher toward itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..checks import check_fields, check_rate, option
from ..network.latency_table import LatencyTable
from ..network.routing import Routing

BUDGETS = ("macs", "latency")


@dataclass
class LossConfig:
    """The loss settings common to every method (``TrainConfig.loss``): the target r, eqn 16's
    shared weights and the levers. A method's own loss terms are its options
    (:class:`~dmnn.methods.base.MethodOptions`)."""

    target_rate: float = option(0.5, check=check_rate, label="target rate r", help=(
        "r: the target in (0, 1]: the MACs ratio (--budget macs) or the latency ratio to the "
        "static backbone (--budget latency)."))
    budget: str = option("macs", choices=BUDGETS, help=(
        "What the resource loss holds at r, for every gated method: macs (the paper: MACs ÷ "
        "the all-on network's) | latency (the expected time under the gates' probabilities ÷ "
        "the static backbone's, from --latency-table or profiled at the start)."))
    latency_table: str | None = option(None, help=(
        "A `dmnn profile MODEL --out FILE.json` table of the run's model and input size: the "
        "price of --budget latency, and with --budget macs a predicted latency ratio reported "
        "beside the MACs ratio. Default with --budget latency: profiled at the start on "
        "--device at --latency-batch."))
    latency_gradient: str = option("rows", choices=("rows", "exact"), help=(
        "--budget latency: rows (default): the expected latency's value with the gradient of "
        "its per-row part, which every gate turned off lowers | exact: the whole expectation's "
        "gradient, whose per-call part can hold gates on where calls dominate."))
    latency_batch: int | None = option(None, min=1, help=(
        "The batch size the latency is budgeted for (the table's; default: the table's "
        "batch, or 32 when profiled at the start)."))
    alpha_res: float = option(1.0, min=0.0, help="α2, weight of the resource loss.")
    alpha_cls: float = option(1.0, min=0.0, help="α3, weight of the classification loss.")
    distill: float = option(0.0, min=0.0, help=(
        "In-place distillation weight: every step also trains the all-on network on the labels, "
        "and its logits teach the gated one (KL); 0: off. Gated models."))
    distill_temperature: float = option(1.0, min=0.0, lo_open=True, help=(
        "Softmax temperature of the in-place distillation KL."))
    gate_entropy: float = option(0.0, min=0.0, help=(
        "Weight of the gates' mean binary entropy (pushes each gate to decide per image); "
        "0: off. Gated models."))
    gate_entropy_warmup: float = option(0.0, min=0.0, help=(
        "Epochs over which the gate-entropy weight ramps linearly (per step) from 0 to "
        "--gate-entropy: the gates first train with the guards alone, then are pushed to "
        "decide; 0: the full weight from the first step."))

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class LossOutput:
    total: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)  # detached, for logging


class DualAscent:
    """λ·gap added to a resource loss, and λ += η·gap after every training step (dual ascent).

    Why: a quadratic resource term alone pulls with 2·gap, which vanishes near the target, so
    the classification loss's steady pull toward more compute leaves the budget off target by a
    margin that depends on the data (ConvNet-AIG under ``--budget latency`` stayed up to 0.1 off
    its target on the full schedule); λ integrates the error until the mean is on target.
    λ lives on the device (no host sync per step) and is checkpointed through the loss's
    ``state_dict`` (exact resume)."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.value: Tensor | float = 0.0  # λ (a float64 tensor on the device once training runs)

    def __float__(self) -> float:
        return float(self.value)

    def state_dict(self) -> dict[str, float]:
        """λ as the owning loss checkpoints it."""
        return {"dual": float(self.value)}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state.get("dual", 0.0))

    def term(self, gap: Tensor, learning: bool) -> tuple[Tensor, Tensor]:
        """(λ·gap for the loss, λ as used, for logging); ``learning``: a training step whose
        gates can follow (not eval, not forced gates), the only kind that moves λ."""
        dual = torch.as_tensor(self.value, dtype=torch.float64, device=gap.device)
        if learning:
            self.value = dual + self.step * gap.detach().double()
        return dual.to(gap.dtype) * gap, dual.detach().clone()


def gates_learn(logits: Tensor, routing: Routing) -> bool:
    """Whether a step trains gates that can follow a budget term (not eval, not forced)."""
    return logits.requires_grad and any(g is not None and g.requires_grad for g in routing.gates)


class MacsBudget:
    """The paper's resource: f / f_total, the MACs fraction (eqn 13; ``scope`` as in
    :meth:`~dmnn.network.routing.Routing.macs_fraction`)."""

    name = "macs"

    def fraction(self, routing: Routing, scope: str = "network") -> Tensor:
        return routing.macs_fraction(scope).float()


def budget_probs(routing: Routing) -> list[Tensor | None]:
    """Per block, the on-probability of every path that the latency budget prices: the gate's
    soft probabilities where they carry a gradient (DMNN, AIG); else what ran, where the gate
    records it apart from its gates (LC-Net, whose gates are saliences: a block with any
    positive salience runs; its loss moves the budget through its L1 weights, not this
    gradient); else the gates themselves (DRNet's soft route r in training, a plug-in's
    straight-through gates)."""
    executed = routing.executed or [None] * len(routing.gates)
    out: list[Tensor | None] = []
    for g, p, ran in zip(routing.gates, routing.probs, executed, strict=True):
        if g is None:
            out.append(None)
        elif p is not None and p.requires_grad:
            out.append(p)
        elif ran is not None:
            out.append(ran)
        else:
            out.append(g)
    return out


class LatencyBudget:
    """``--budget latency``: the expected time of a batch of the table's size under the gates'
    probabilities ÷ the static backbone's measured time
    (:meth:`~dmnn.network.latency_table.LatencyTable.expected_fraction`). ``scope`` does not
    apply: latency is the whole network's."""

    name = "latency"

    def __init__(self, table: LatencyTable, gradient: str = "rows") -> None:
        self.table, self.gradient = table, gradient

    def fraction(self, routing: Routing, scope: str = "network") -> Tensor:
        return self.table.expected_fraction(budget_probs(routing), self.gradient).float()


Budget = MacsBudget | LatencyBudget


def flops_loss(routing: Routing, target: float, scope: str = "network",
               budget: Budget | None = None) -> Tensor:
    """Eqn 14: (f / f_total − r)², the MACs budget; with a latency ``budget``, the same square
    of the expected latency fraction."""
    return ((budget or MacsBudget()).fraction(routing, scope) - target) ** 2


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


@dataclass
class Levers:
    """The shared levers of a run, added to a method's own terms (:meth:`add`).

    ``entropy_warmup_steps``: the gate-entropy ramp in training steps."""

    gate_entropy: float = 0.0
    entropy_warmup_steps: float = 0.0
    distill: float = 0.0
    distill_temperature: float = 1.0

    @classmethod
    def of(cls, loss: LossConfig, steps_per_epoch: int) -> Levers:
        return cls(loss.gate_entropy, loss.gate_entropy_warmup * steps_per_epoch, loss.distill,
                   loss.distill_temperature)

    def add(self, out: LossOutput, logits: Tensor, routing: Routing, labels: Tensor, step: int,
            teacher: Callable[[], Tensor] | None) -> LossOutput:
        """``out`` with the gate-entropy term (ramped to ``step``) and, given the all-on
        network's logits through ``teacher``, its own CE and the distillation KL."""
        total = out.total
        if self.gate_entropy:
            entropy = gate_entropy_loss(routing.probs)
            total = total + ramp(self.gate_entropy, step, self.entropy_warmup_steps) * entropy
            out.parts["gate_entropy"] = entropy.detach()
        if self.distill:
            if teacher is None:
                raise RuntimeError("in-place distillation needs the all-on network's logits")
            teacher_logits = teacher()
            teacher_cls = F.cross_entropy(teacher_logits, labels)
            kd = distill_loss(logits, teacher_logits, self.distill_temperature)
            total = total + teacher_cls + self.distill * kd
            out.parts.update(teacher_cls=teacher_cls.detach(), distill=kd.detach())
        out.total = total
        out.parts["total"] = total.detach()
        return out
