"""The method interface: what a gating method gives the shared harness.

A method is one file under ``methods/`` holding its gate, its model options, its loss, and its
training specifics, behind :class:`Method`. The registry crosses every method with every backbone
(``<prefix>_<backbone>``); the engine, config, evaluator and CLI call only the hooks below, so
adding a method edits none of them. The defaults describe a static network: classification loss
only, no calibration, nothing extra per epoch. See docs/architecture.md, "Adding a method".
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar

import torch.nn.functional as F
from torch import Tensor

from ..checks import check_fields, check_rate, option
from ..network.gate import Gate, GateFactory
from ..network.routing import MACS_SCOPES, Routing

if TYPE_CHECKING:
    from ..data import DataBundle
    from ..evaluation.metrics import EvalRecord
    from ..network.dynamic_net import DynamicNet
    from ..train.config import TrainConfig


@dataclass(frozen=True)
class MethodOptions:
    """A method's model keyword arguments (its fields), validated from their declarations, and
    the gate factory that turns them into one gate per block. Base: one sub-block, no gate."""

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
        return asdict(self)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass(frozen=True)
class NoGate(MethodOptions):
    """Options of the static backbones: none."""

    def gate_factory(self) -> None:
        return None


@dataclass
class LossOutput:
    total: Tensor
    parts: dict[str, Tensor] = field(default_factory=dict)  # detached, for logging


class Loss:
    """A method's training loss. ``state_dict`` holds what it adapts during training (a dual
    multiplier, an adaptive weight): it is checkpointed, so a resumed run continues exactly."""

    def __call__(self, logits: Tensor, routing: Routing, labels: Tensor,
                 categories: Tensor | None = None) -> LossOutput:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class ClassificationLoss(Loss):
    """α_cls·CE: the loss of the static backbones and twins."""

    def __init__(self, alpha_cls: float = 1.0) -> None:
        self.alpha_cls = alpha_cls

    def __call__(self, logits: Tensor, routing: Routing, labels: Tensor,
                 categories: Tensor | None = None) -> LossOutput:
        cls = F.cross_entropy(logits, labels)
        total = self.alpha_cls * cls
        return LossOutput(total=total, parts={"cls": cls.detach(), "total": total.detach()})


@dataclass
class LossConfig:
    """The loss settings of a run (``TrainConfig.loss``): the target r and eqn 16's weights,
    which every method reads as far as it has them, and DMNN's own terms and guards."""

    target_rate: float = option(0.5, check=check_rate, label="target rate r",
                                help="r: target MACs ratio in (0, 1].")
    exec_target: float | None = option(None, min=0.0, max=1.0, label="exec target e", help=(
        "DMNN: e, the target execution rate of eqn 12 (default: e = r, as in the paper)."))
    alpha_ctg: float = option(1.0, min=0.0, help="DMNN: α1, weight of the category loss.")
    alpha_res: float = option(1.0, min=0.0, help="α2, weight of the resource loss.")
    alpha_cls: float = option(1.0, min=0.0, help="α3, weight of the classification loss.")
    ctg_base: float = option(1e-4, min=0.0, help="DMNN: α_l of the first stage (eqn 10).")
    ctg_factor: float = option(10.0, min=0.0, help="DMNN: α_l growth per stage (eqn 10).")
    category_supervision: bool = option(True, flag="--category-loss/--no-category-loss",
                                        help="DMNN: category supervision (ablation).")
    macs_scope: str = option("network", choices=MACS_SCOPES, help=(
        "network (default) | dynamic: what f_total covers."))
    path_balance: float = option(0.0, min=0.0, help=(
        "DMNN: weight of the per-sub-block rate term (0: the paper's loss)."))
    dual_step: float = option(0.0, min=0.0, help=(
        "DMNN: step of the MACs-ratio multiplier (0: the paper's loss)."))

    def __post_init__(self) -> None:
        check_fields(self)

    @property
    def exec_rate_target(self) -> float:
        """e of eqn 12: ``exec_target``, else r."""
        return self.target_rate if self.exec_target is None else self.exec_target


@dataclass
class EpochSetup:
    """What a method changes for one training epoch.

    forward: a context manager entered around every training forward (e.g. forced gates).
    record: extra numbers for the epoch's metrics line (e.g. whether routers were frozen).
    """

    forward: Callable[[], AbstractContextManager[Any]] = nullcontext
    record: dict[str, float | int] = field(default_factory=dict)


class Method:
    """One gating method in the harness; subclass it and override what the method has.

    family: name in ``list_models(family)`` and checkpoints' metadata.
    prefix: model names are ``<prefix>_<backbone>``; None registers under the backbone's name.
    options: the model keyword arguments (a :class:`MethodOptions` dataclass).
    gated: whether its models have gates (a twin has N sub-blocks but none).
    owns: training options only this method reads; set (non-zero) for another method's model,
        the config refuses them.
    """

    family: ClassVar[str] = ""
    prefix: ClassVar[str | None] = None
    options: ClassVar[type[MethodOptions]] = NoGate
    gated: ClassVar[bool] = True
    owns: ClassVar[tuple[str, ...]] = ()
    doc: ClassVar[str] = ""

    def applies_to(self, backbone: str) -> bool:
        """Whether ``<prefix>_<backbone>`` exists."""
        return True

    def model_kwargs(self, cfg: TrainConfig, data: DataBundle) -> dict[str, Any]:
        """The method's ``create_model`` keyword arguments for a training config."""
        return {}

    def check_config(self, cfg: TrainConfig) -> None:
        """Refuse config options that do not fit the method (one-line ValueError)."""

    def build_loss(self, cfg: TrainConfig, total_steps: int) -> Loss:
        """The training loss; ``total_steps`` (epochs × steps per epoch) sizes adaptive steps."""
        return ClassificationLoss(cfg.loss.alpha_cls)

    def uses_categories(self, cfg: TrainConfig) -> bool:
        """Whether training needs the coarse categories (else a default grouping that does not
        fit the dataset only costs its per-category report, not the run)."""
        return False

    def unused_parameters(self, cfg: TrainConfig) -> bool:
        """Whether a training step may leave parameters without a gradient (a path no row of the
        rank took, a frozen router): DDP then searches the graph for them every step."""
        return False

    def train_copies(self, cfg: TrainConfig) -> int:
        """Augmented copies of every training sample per batch."""
        return 1

    def calibration_metric(self, cfg: TrainConfig) -> str | None:
        """What gate calibration holds at r (the quantity the method's loss targets), or None:
        ``macs_ratio``, ``macs_ratio_dynamic`` or ``exec_rate``."""
        return None

    def epoch_setup(self, model: DynamicNet, cfg: TrainConfig, epoch: int) -> EpochSetup:
        """Prepare ``model`` for training epoch ``epoch`` (0-based)."""
        return EpochSetup()

    def report(self, model: DynamicNet, record: EvalRecord) -> dict[str, Any]:
        """Extra numbers for the evaluation summary (metrics.json, ``dmnn eval``)."""
        return {}

