"""Training configuration: dataclass defaults < preset < YAML file < command-line overrides.

Every option is declared once, as a field with :func:`dmnn.checks.option` metadata (type, default,
help, range): validation, ``dmnn train``'s flags and the ``--resume`` rules are all generated from
these declarations. The common options are :class:`TrainConfig`'s own; two sections are nested:
the shared loss settings (``cfg.loss``, a :class:`~dmnn.methods.objective.LossConfig`) and the
active method's options (``cfg.options``, the method's own
:class:`~dmnn.methods.base.MethodOptions`). Both are spelled flat in YAML files, on the command
line and in ``config.yaml`` (``loss:`` or a section named after the method, ``dmnn:``, nest them
too), so files written before the nesting still load. An option of another method than the
model's is refused with the name of the method that owns it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..checks import check_fields, field_types, option
from ..distributed.group import BACKENDS
from ..errors import UsageError
from ..methods.base import MethodOptions
from ..methods.objective import LossConfig
from ..registry import list_methods, list_models, method_of, native_input_size
from .precision import AMP_MODES

if TYPE_CHECKING:
    from ..methods.base import Method

SCHEDULES = ("cosine", "multistep")

RECIPES: dict[str, dict[str, Any]] = {
    # eqn 16 alone: no path balance, no dual multiplier, no distillation (the paper's loss; the
    # gate-noise annealing stays, as for every method in the harness)
    "paper": {"path_balance": 0.0, "dual_step": 0.0, "distill": 0.0},
    # the routing guards every preset sets (docs/training.md, "Routing guards")
    "guarded": {"path_balance": 0.25, "dual_step": 0.1},
    # the guards plus in-place distillation from the all-on network (results/frontier)
    "distill": {"path_balance": 0.25, "dual_step": 0.1, "distill": 1.0},
    # the guards plus the gate-entropy term: the frontier screen's best (results/frontier)
    "entropy": {"path_balance": 0.25, "dual_step": 0.1, "gate_entropy": 2.0},
    # eqn 16 plus the gate-entropy term, no guards: the best on the proxy and on the full
    # cpu-fast schedule at r = 0.5 (results/frontier), where its routing is all but static
    "paper-entropy": {"path_balance": 0.0, "dual_step": 0.0, "distill": 0.0, "gate_entropy": 2.0},
    # paper-entropy plus the dual multiplier λ on the MACs ratio: the best DMNN at every r on the
    # proxy, and λ holds r where paper-entropy drifts (results/frontier/README.md); DMNN's
    # default_recipe, so every preset trains DMNN with it
    "paper-entropy-dual": {"path_balance": 0.0, "dual_step": 0.1, "distill": 0.0,
                           "gate_entropy": 2.0},
    # eqn 16 plus λ, no gate entropy: DMNN's default under --budget latency, the only recipe
    # that held its latency target on the proxy (the entropy term saturates the gates before
    # the latency term moves them: results/frontier/README.md, "Latency budget")
    "paper-dual": {"path_balance": 0.0, "dual_step": 0.1, "distill": 0.0, "gate_entropy": 0.0},
}
"""Named recipes for the gated methods: ``--recipe NAME`` sets these over the preset (a config
file and flags still override them)."""

ALIASES = {"sub_blocks": "num_sub_blocks"}
"""Older spellings accepted in YAML files and saved configs."""


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as ``config.yaml`` in the output folder."""

    # model and gates (the method's own options: ``options``)
    model: str = option("dmnn_resnet20", help="Model name (see `dmnn models`).")
    gate_noise: float = option(1.0, min=0.0, help=(
        "Gumbel noise scale before it anneals (0: noise-free straight-through gates)."))
    noise_anneal_from: float = option(0.5, min=0.0, max=1.0, help=(
        "Fraction of training after which the Gumbel noise decays."))
    noise_final: float = option(0.0, min=0.0, max=1.0, help=(
        "Gumbel noise scale at the last epoch (1.0 with --noise-anneal-from 1: the paper)."))
    calibrate_gates: bool = option(True, flag="--calibrate/--no-calibrate", resume=True, help=(
        "After training, shift the gate thresholds so the eval-mode ratio meets r "
        "(every dynamic method; default on)."))
    calibration_samples: int = option(5000, min=1, resume=True, help=(
        "Training images (unaugmented) gate calibration measures on."))
    calibration_max_cost: float = option(0.003, min=0.0, max=1.0, resume=True, help=(
        "Gate calibration keeps the trained gates when every way of meeting r costs more than "
        "this much top-1 on the calibration images (0.003: 0.3 points)."))
    holdout: int = option(0, min=0, help=(
        "Training images kept out of training: gate calibration chooses on them (and reports "
        "its cost there) instead of on training images. Never the test split."))
    calibration_slack: float = option(0.01, min=0.0, max=1.0, resume=True, help=(
        "Gate calibration leaves the thresholds as trained when the eval-mode ratio is already "
        "within this of r (a settled gate moves only by flipping many images at once); "
        "0: always calibrate to within 0.002."))
    gate_weight_decay: float | None = option(None, min=0.0, help=(
        "Weight decay of the gates' own parameters (controllers, gate FCs); default: "
        "--weight-decay. Decay pulls every on/off logit toward 0, an undecided gate. Gated "
        "models."))
    init_from: str | None = option(None, help=(
        "Warm start: initialise from a checkpoint's weights (every tensor whose name and shape "
        "match, e.g. a twin_* run for dmnn_*, the static backbone for aig_*)."))
    width_mult: float | None = option(None, min=0.0, lo_open=True, help=(
        "Width multiplier (CIFAR ResNets, resnet50_cifar, mobilenetv2 backbones)."))
    recipe: str | None = option(None, choices=tuple(RECIPES), help=(
        "Named recipe: " + " | ".join(RECIPES) + " (set over the preset; see docs/training.md)."))
    # data
    dataset: str = option("digits", help="digits | cifar10 | cifar100 | imagefolder")
    data_dir: str | None = option(None, resume=True, help="Dataset folder.")
    categories: str | int | None = option(None, help=(
        "Category map: K (k-means), 'auto', 'none' (one category), or a JSON file."))
    workers: int = option(0, min=0, resume=True, help="DataLoader workers.")
    image_size: int | None = option(None, min=8, help=(
        "imagefolder: image side in pixels (default: the model's own input, 32 for the CIFAR "
        "backbones, 224 for the ImageNet ones; up to 64 px CIFAR-style augmentation)."))
    max_train_samples: int | None = option(None, min=1, help="Use only this many training images.")
    max_test_samples: int | None = option(None, min=1, help="Use only this many test images.")
    # optimisation (§4.1)
    epochs: int = option(15, min=1, resume=True, help="Training epochs.")
    batch_size: int = option(64, min=1, help=(
        "Training batch size per process (the global batch is K times it under torchrun)."))
    eval_batch_size: int = option(512, min=1, help="Evaluation batch size per process.")
    lr: float = option(0.05, min=0.0, lo_open=True, help=(
        "Peak learning rate (SGD), used as given: scale it with the global batch yourself."))
    momentum: float = option(0.9, min=0.0, help="SGD momentum.")
    nesterov: bool = option(True, help="Nesterov momentum.")
    weight_decay: float = option(1e-4, min=0.0, help="Weight decay.")
    schedule: str = option("cosine", choices=SCHEDULES, help="cosine | multistep")
    milestones: list[int] = option(default_factory=list, help=(
        "multistep: epochs where the learning rate drops (repeat the flag)."))
    gamma: float = option(0.1, min=0.0, help="multistep: learning-rate factor at each milestone.")
    warmup_epochs: int = option(0, min=0, help="Epochs of linear learning-rate warm-up.")
    # losses (eqn 16) and the active method's options
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    options: MethodOptions = dataclasses.field(default=None)  # type: ignore[assignment]
    # run
    seed: int = option(0, min=0, help="Random seed.")
    device: str = option("cpu", resume=True, help="cpu | cuda | auto")
    threads: int | None = option(None, min=1, resume=True, help="CPU threads.")
    deterministic: bool = option(False, help="torch deterministic algorithms.")
    amp: str = option("off", choices=AMP_MODES, resume=True, help=(
        "Mixed precision: off | bf16 (CPU or CUDA) | fp16 (CUDA, with a GradScaler)."))
    channels_last: bool = option(False, resume=True, help=(
        "Train in the channels-last memory layout (faster convolutions on most GPUs)."))
    sync_bn: bool = option(False, resume=True, help=(
        "torchrun: BatchNorm statistics over the global batch (SyncBatchNorm)."))
    dist_backend: str = option("auto", choices=BACKENDS, resume=True, help=(
        "torchrun: process-group backend (auto: nccl on CUDA, gloo on CPU)."))
    dist_timeout: float = option(600.0, min=1.0, resume=True, help=(
        "torchrun: seconds a rank waits for the others before it fails (a peer died)."))
    preset: str | None = option(None, cli=False)

    def __post_init__(self) -> None:
        if self.options is None:  # the model's method's defaults
            self.options = self.method.options() if self.model in list_models() else None

    @property
    def target_rate(self) -> float:
        """r, the run's compute target (``loss.target_rate``)."""
        return self.loss.target_rate

    @property
    def method(self) -> Method:
        return method_of(self.model)

    def data_image_size(self) -> int:
        """The side ImageFolder images are served at: ``image_size``, else the model's own."""
        return self.image_size or native_input_size(self.model)

    def validate(self) -> None:
        """Types and ranges of every field, then the rules between fields and the method's own."""
        check_model(self.model)
        check_fields(self)
        if type(self.options) is not self.method.options:
            raise UsageError(f"options of {self.model} must be {self.method.options.__name__}, "
                             f"got {type(self.options).__name__}")
        if self.schedule == "multistep" and not self.milestones:
            raise UsageError("schedule 'multistep' needs milestones (epochs where lr drops)")
        method = self.method
        if self.loss.distill and not method.gated:
            raise UsageError(f"--distill needs a gated model (its all-on network is the "
                             f"teacher): {self.model} has no gates")
        if self.gate_weight_decay is not None and not method.gated:
            raise UsageError(f"--gate-weight-decay needs a gated model: {self.model} has no gates")
        if self.loss.gate_entropy and not method.gated:
            raise UsageError(f"--gate-entropy needs a gated model: {self.model} has no gates")
        warmup = self.loss.gate_entropy_warmup
        if warmup and not self.loss.gate_entropy:
            raise UsageError("--gate-entropy-warmup ramps --gate-entropy, which is 0: set "
                             "--gate-entropy too")
        if warmup > self.epochs:
            raise UsageError(f"--gate-entropy-warmup ({warmup:g} epochs) is "
                             f"longer than --epochs ({self.epochs}): shorten it")
        method.check_config(self)

    def to_dict(self) -> dict[str, Any]:
        """Flat, as in ``config.yaml`` and checkpoints (the loss fields and the method's options
        beside the others)."""
        flat = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in SECTIONS}
        flat.update(dataclasses.asdict(self.loss))
        flat.update({k: getattr(self.options, k) for k in self.options.config_names()})
        return _copy(flat)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, saved: bool = False) -> TrainConfig:
        """From flat (or ``loss:`` / ``<method>:``-nested) options; unknown names raise
        ValueError, and so do another method's options, except in a ``saved`` config (written
        by a version that saved every method's options for every model: they are dropped)."""
        values = normalize(values)
        model = values.get("model", cls.model)
        check_model(model)
        method = method_of(model)
        loss = _section(values, "loss")
        opts = _section(values, method.name)
        loss_names = {f.name for f in dataclasses.fields(LossConfig)}
        opt_names = set(method.options.config_names())
        own = {f.name for f in dataclasses.fields(cls)} - set(SECTIONS)
        for key in list(values):
            if key in loss_names:
                loss[key] = values.pop(key)
            elif key in opt_names:
                opts[key] = values.pop(key)
        foreign = {k: owners for k in values if k not in own and (owners := owners_of(k))}
        if foreign and not saved:
            key = sorted(foreign)[0]
            raise UsageError(f"{key} is an option of {' and '.join(foreign[key])} models, not "
                             f"of {model}: drop it (or pick such a model)")
        unknown = sorted(set(values) - own - set(foreign)) + sorted(set(loss) - loss_names) \
            + sorted(set(opts) - opt_names)
        if unknown:
            raise UsageError(f"unknown config option {unknown[0]!r}: see `dmnn train --help`")
        return cls(**{k: v for k, v in values.items() if k in own}, loss=LossConfig(**loss),
                   options=method.options(**opts))


SECTIONS = ("loss", "options")
"""The nested sections of :class:`TrainConfig` (flat in files and on the command line)."""


def _copy(flat: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of the plain values (lists), so a saved dict never aliases the config."""
    return {k: list(v) if isinstance(v, list) else v for k, v in flat.items()}


def _section(values: dict[str, Any], name: str) -> dict[str, Any]:
    """The nested mapping ``name:`` of a config, popped from ``values`` (empty if absent)."""
    nested = values.pop(name, None) or {}
    if not isinstance(nested, Mapping):
        raise UsageError(f"config option {name!r} must be a mapping of {name} options")
    return normalize(nested)


def check_model(model: Any) -> None:
    if not isinstance(model, str) or model not in list_models():
        raise UsageError(f"unknown model {model!r}: see `dmnn models`")


def owners_of(name: str) -> list[str]:
    """The registered methods that declare option ``name`` (``<method>_*``)."""
    return [m.model_name("*") for m in list_methods() if name in m.options.config_names()]


def normalize(values: Mapping[str, Any]) -> dict[str, Any]:
    """Option names with '-' → '_' and older spellings → today's."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        name = ALIASES.get(name, name)
        if name in out:
            raise UsageError(f"config option {name!r} is given twice (as {key!r} too)")
        out[name] = value
    return out


@dataclass(frozen=True)
class OptionInfo:
    """One option as the command line sees it."""

    name: str  # field name (flat)
    type: Any
    default: Any
    metadata: Mapping[str, Any]


def options() -> Iterator[OptionInfo]:
    """Every option of :class:`TrainConfig`, the loss settings and every registered method's
    options flattened in place (an option two methods share, such as N, once)."""
    seen: set[str] = set()
    for cls in (TrainConfig, LossConfig, *(m.options for m in list_methods())):
        hints = field_types(cls)
        for f in dataclasses.fields(cls):
            if f.name in SECTIONS or f.name in seen:
                continue
            seen.add(f.name)
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            yield OptionInfo(f.name, hints[f.name], default, f.metadata)


# A preset sets data, schedule and budget; each method's loss terms come from its
# ``default_recipe`` (DMNN: paper-entropy-dual); `--recipe guarded` restores the routing guards.
PRESETS: dict[str, dict[str, Any]] = {
    # the embedded default: 8×8 digits from scikit-learn, a couple of minutes on 2 CPU cores
    "digits": {
        "dataset": "digits", "model": "dmnn_resnet20", "epochs": 15, "batch_size": 64,
        "lr": 0.05, "schedule": "cosine", "weight_decay": 5e-4, "target_rate": 0.5,
    },
    # the paper's CIFAR recipe (§4.1)
    "cifar": {
        "dataset": "cifar10", "model": "dmnn_resnet56", "epochs": 200, "batch_size": 256,
        "lr": 0.1, "schedule": "multistep", "milestones": [100, 150], "gamma": 0.1,
        "weight_decay": 1e-4,
    },
    # the paper's ImageNet recipe (§4.1)
    "imagenet": {
        "dataset": "imagefolder", "model": "dmnn_resnet50", "epochs": 120, "batch_size": 256,
        "lr": 0.1, "schedule": "cosine", "weight_decay": 1e-4, "eval_batch_size": 128,
    },
    # CIFAR-10 in under an hour on 2 CPU cores (ResNet-20: ~35 min static, ~45 min DMNN N=2)
    "cpu-fast": {
        "dataset": "cifar10", "model": "dmnn_resnet20", "epochs": 20, "batch_size": 128,
        "lr": 0.1, "schedule": "cosine", "warmup_epochs": 1, "weight_decay": 5e-4,
    },
}


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"config file {p} is a folder: pass a YAML file")
    if not p.is_file():
        raise UsageError(f"config file {p} not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0]
        raise UsageError(f"config file {p} is not valid YAML: {first}") from None
    if not isinstance(data, dict):
        raise UsageError(f"config file {p} must hold a mapping of option: value")
    return normalize(data)


def resolve_config(
    preset: str | None = None, file: str | Path | None = None, overrides: dict | None = None,
    *, saved: bool = False,
) -> TrainConfig:
    """Defaults < preset (from the argument or the file's ``preset:``) < recipe < file <
    overrides. With a preset and no recipe, the model's method's recipe for the budget
    (``Method.recipe_for``: its ``default_recipe``, unless the budget needs another). A recipe's
    option of a method other than the model's is left out; ``saved``: ``file`` is a run's own
    config.yaml (its values are complete, so no default recipe is added)."""
    from_file = load_yaml(file) if file is not None else {}
    name = preset or from_file.get("preset")
    values: dict[str, Any] = {}
    if name is not None:
        if name not in PRESETS:
            raise UsageError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
        values.update(PRESETS[name])
        values["preset"] = name
    given = {k: v for k, v in normalize(overrides or {}).items() if v is not None}
    model = given.get("model", from_file.get("model", values.get("model", TrainConfig.model)))
    recipe = given.get("recipe", from_file.get("recipe", values.get("recipe")))
    if recipe is None and name is not None and not saved and model in list_models():
        budget = given.get("budget", from_file.get("budget", values.get("budget", "macs")))
        recipe = method_of(model).recipe_for(budget)
        if recipe is not None:
            values["recipe"] = recipe
    if recipe is not None and recipe not in RECIPES:
        raise UsageError(f"unknown recipe {recipe!r}: choose one of {', '.join(RECIPES)}")
    values.update(RECIPES.get(recipe, {}))
    if model in list_models():
        mine = set(method_of(model).options.config_names())
        values = {k: v for k, v in values.items() if k in mine or not owners_of(k)}
    values.update(from_file)
    values.update(given)
    cfg = TrainConfig.from_dict(values, saved=saved)
    cfg.validate()
    return cfg
