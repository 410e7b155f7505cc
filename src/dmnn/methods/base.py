"""The method interface: what a gating method gives the shared harness.

A method is one file under ``methods/`` holding its gate, its options (model and training, one
:class:`MethodOptions` dataclass), its loss, and its training specifics, behind :class:`Method`.
The registry crosses every method with every backbone (``<name>_<backbone>``); the engine,
config, evaluator and CLI call only the hooks below and read the options' declarations, so adding
a method edits none of them. The defaults describe a static network: classification loss
only, no calibration, nothing extra per epoch. See docs/architecture.md, "Adding a method".
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch.nn.functional as F
from torch import Tensor

from ..checks import check_fields, option
from ..network.gate import Gate, GateFactory
from ..network.routing import Routing
from .objective import Budget, Levers, MacsBudget
from .objective import LossConfig as LossConfig  # re-exported for method files
from .objective import LossOutput as LossOutput

if TYPE_CHECKING:
    from ..data import DataBundle
    from ..evaluation.metrics import EvalRecord
    from ..network.dynamic_net import DynamicNet


@dataclass(frozen=True)
class MethodOptions:
    """Every option of a method, declared once as a field with :func:`dmnn.checks.option`
    metadata: the model's keyword arguments (``create_model``) and, marked ``model=False``, the
    method's training and loss options. ``dmnn train`` makes a flag of each field, the config
    nests the active method's options (``TrainConfig.options``) and a model's keyword arguments
    are its model fields. A field marked ``cli=False`` is set from the data (e.g. DMNN's K).
    Base: one sub-block, no gate, no options."""

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def num_sub_blocks(self) -> int:
        return 1

    def make_gate(self, index: int, in_channels: int, num_sub_blocks: int, width: int) -> Gate:
        raise NotImplementedError

    def gate_factory(self) -> GateFactory | None:
        """None for ungated models (static backbones and twins)."""
        return self.make_gate

    def finish(self, model: DynamicNet) -> DynamicNet:
        """Adjust the model the backbone built (default: as built)."""
        return model

    def to_dict(self) -> dict[str, Any]:
        """The model keyword arguments (what ``create_model`` takes and a model records)."""
        return {name: getattr(self, name) for name in self.model_names()}

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every option of the method."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def model_names(cls) -> tuple[str, ...]:
        """The options that are model keyword arguments."""
        return tuple(f.name for f in fields(cls) if f.metadata.get("model", True))

    @classmethod
    def config_names(cls) -> tuple[str, ...]:
        """The options a training config holds (all but those set from the data)."""
        return tuple(f.name for f in fields(cls) if f.metadata.get("cli", True))


@dataclass(frozen=True)
class NoGate(MethodOptions):
    """Options of the static backbones: none."""

    def gate_factory(self) -> None:
        return None


@dataclass(frozen=True)
class SubBlocks(MethodOptions):
    """N, shared by the methods that split every block (DMNN and its static twin)."""

    num_sub_blocks: int = option(2, min=1, flag="--sub-blocks",
                                 help="N: sub-blocks per block (dmnn_*, twin_*).")


@dataclass(frozen=True)
class GumbelGates(MethodOptions):
    """The Gumbel-softmax gates' options, shared by DMNN and ConvNet-AIG."""

    tau: float = option(1.0, min=0.0, lo_open=True, help="Gumbel temperature (dmnn_*, aig_*).")
    gate_bias: float = option(2.0, help="Initial on-minus-off logit of every gate "
                                        "(dmnn_*, aig_*; positive: start mostly on).")


@dataclass(frozen=True)
class DualStep(MethodOptions):
    """The dual multiplier on the budget's gap, shared by DMNN and ConvNet-AIG
    (:class:`~dmnn.methods.objective.DualAscent`)."""

    dual_step: float = option(0.0, min=0.0, model=False, help=(
        "Step η of the multiplier λ on the budget's gap (dmnn_*: the MACs or latency fraction − "
        "r; aig_*: the mean execution rate or the latency fraction − t); 0: the papers' losses."))


class Loss:
    """A method's training loss: :meth:`terms` is the method's own objective; calling the loss
    adds the shared levers (:class:`~dmnn.methods.objective.Levers`, set by
    :meth:`Method.loss`), so one call gives a step's whole objective. ``state_dict`` holds what
    it adapts during training (a dual multiplier, an adaptive weight): it is checkpointed, so a
    resumed run continues exactly. ``budget`` is the resource the method's budget terms
    measure (:meth:`fraction`; set by :meth:`Method.loss`): a method computes its resource terms
    through it, never from ``routing.macs`` directly, so ``--budget latency`` reaches it."""

    levers: Levers | None = None
    budget: Budget = MacsBudget()

    def fraction(self, routing: Routing, scope: str = "network") -> Tensor:
        """The budgeted resource of the batch as a fraction, differentiable in the gates: the
        MACs fraction (eqn 13) or, with ``--budget latency``, the expected latency fraction."""
        return self.budget.fraction(routing, scope)

    def terms(self, logits: Tensor, routing: Routing, labels: Tensor,
              categories: Tensor | None = None) -> LossOutput:
        raise NotImplementedError

    def __call__(self, logits: Tensor, routing: Routing, labels: Tensor,
                 categories: Tensor | None = None, *, step: int = 0,
                 teacher: Callable[[], Tensor] | None = None) -> LossOutput:
        """The method's terms plus the levers; ``teacher`` runs the all-on network (only
        called when distillation is on), ``step`` ramps the gate entropy."""
        out = self.terms(logits, routing, labels, categories)
        if self.levers is None:
            return out
        return self.levers.add(out, logits, routing, labels, step, teacher)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class ClassificationLoss(Loss):
    """α_cls·CE: the loss of the static backbones and twins."""

    def __init__(self, alpha_cls: float = 1.0) -> None:
        self.alpha_cls = alpha_cls

    def terms(self, logits: Tensor, routing: Routing, labels: Tensor,
              categories: Tensor | None = None) -> LossOutput:
        cls = F.cross_entropy(logits, labels)
        total = self.alpha_cls * cls
        return LossOutput(total=total, parts={"cls": cls.detach(), "total": total.detach()})


@dataclass
class EpochSetup:
    """What a method changes for one training epoch.

    forward: a context manager entered around every training forward (e.g. forced gates).
    record: extra numbers for the epoch's metrics line (e.g. whether routers were frozen).
    """

    forward: Callable[[], AbstractContextManager[Any]] = nullcontext
    record: dict[str, float | int] = field(default_factory=dict)


class RunSettings(Protocol):
    """What a method reads of a run's configuration (:class:`dmnn.train.config.TrainConfig` is
    one): its own options, the objective's section, the schedule's length and the target.
    A protocol, so ``methods/`` never imports ``train/``, not even for its annotations."""

    options: MethodOptions
    loss: LossConfig
    epochs: int
    target_rate: float


class Method:
    """One gating method in the harness; subclass it and override what the method has.

    name: the method's name: ``list_models(name)``, checkpoints' and benches' metadata; its
        models are ``<name>_<backbone>`` (:meth:`model_name`).
    options: every option of the method (a :class:`MethodOptions` dataclass): its models'
        keyword arguments and its training options, each a ``dmnn train`` flag.
    gated: whether its models have gates (a twin has N sub-blocks but none).
    default_recipe: the named recipe (``dmnn.train.config.RECIPES``) every preset trains the
        method with, the one its evidence ranks best; None: the preset's values alone.
    """

    name: ClassVar[str] = ""
    options: ClassVar[type[MethodOptions]] = NoGate
    gated: ClassVar[bool] = True
    doc: ClassVar[str] = ""
    default_recipe: ClassVar[str | None] = None

    def recipe_for(self, budget: str) -> str | None:
        """The named recipe presets train the method with under ``--budget`` ``budget``."""
        return self.default_recipe

    def model_name(self, backbone: str) -> str:
        """The name of the method's model of ``backbone``."""
        return f"{self.name}_{backbone}"

    def applies_to(self, backbone: str) -> bool:
        """Whether the method has a model of ``backbone``."""
        return True

    def model_kwargs(self, cfg: RunSettings, data: DataBundle) -> dict[str, Any]:
        """The method's ``create_model`` keyword arguments for a training config: its model
        options as configured (a method adds what the data decides)."""
        return cfg.options.to_dict()

    def loss(self, cfg: RunSettings, steps_per_epoch: int, budget: Budget | None = None) -> Loss:
        """The run's whole objective: :meth:`build_loss` with the shared levers and the
        budget (default: MACs) attached."""
        loss = self.build_loss(cfg, cfg.epochs * steps_per_epoch)
        loss.levers = Levers.of(cfg.loss, steps_per_epoch)
        loss.budget = budget or MacsBudget()
        return loss

    def check_config(self, cfg: RunSettings) -> None:
        """Refuse config options that do not fit the method (one-line ValueError)."""

    def build_loss(self, cfg: RunSettings, total_steps: int) -> Loss:
        """The training loss; ``total_steps`` (epochs × steps per epoch) sizes adaptive steps."""
        return ClassificationLoss(cfg.loss.alpha_cls)

    def uses_categories(self, cfg: RunSettings) -> bool:
        """Whether training needs the coarse categories (else a default grouping that does not
        fit the dataset only costs its per-category report, not the run)."""
        return False

    def unused_parameters(self, cfg: RunSettings) -> bool:
        """Whether a training step may leave parameters without a gradient (a path no row of the
        rank took, a frozen router): DDP then searches the graph for them every step."""
        return False

    def train_copies(self, cfg: RunSettings) -> int:
        """Augmented copies of every training sample per batch."""
        return 1

    def calibration_metric(self, cfg: RunSettings) -> str | None:
        """What gate calibration holds at r (the quantity the method's loss targets), or None:
        ``macs_ratio``, ``macs_ratio_dynamic`` or ``exec_rate``."""
        return None

    def epoch_setup(self, model: DynamicNet, cfg: RunSettings, epoch: int) -> EpochSetup:
        """Prepare ``model`` for training epoch ``epoch`` (0-based)."""
        return EpochSetup()

    def report(self, model: DynamicNet, record: EvalRecord) -> dict[str, Any]:
        """Extra numbers for the evaluation summary (metrics.json, ``dmnn eval``)."""
        return {}

