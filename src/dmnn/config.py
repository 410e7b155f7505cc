"""Training configuration: dataclass defaults < preset < YAML file < command-line overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .losses import MACS_SCOPES, LossConfig
from .registry import list_models, model_family

SCHEDULES = ("cosine", "multistep")


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as ``config.yaml`` in the output folder."""

    # model
    model: str = "dmnn_resnet20"
    sub_blocks: int = 2
    hidden_dim: int = 32
    prev_state: bool = True
    category_supervision: bool = True
    tau: float = 1.0
    gate_bias: float = 2.0
    noise_anneal_from: float = 0.5  # fraction of training after which Gumbel noise decays
    noise_final: float = 0.0  # noise scale at the last epoch (1.0 with anneal_from 1: paper)
    gate_warmup_epochs: int = 0  # DMNN: first epochs with every sub-block on (no gating)
    router_finetune_epochs: int | None = None  # DRNet: last epochs with hard, frozen routers
    calibrate_gates: bool = True  # after training, put the eval-mode ratio on r (gate_calibration)
    calibration_samples: int = 5000  # training images (unaugmented) calibration measures on
    width_mult: float | None = None
    # data
    dataset: str = "digits"
    data_dir: str | None = None
    categories: str | int | None = None
    workers: int = 0
    copies: int = 2  # DRNet: augmented copies of every training sample (M)
    max_train_samples: int | None = None
    max_test_samples: int | None = None
    # optimisation (§4.1)
    epochs: int = 15
    batch_size: int = 64
    eval_batch_size: int = 512
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    warmup_epochs: int = 0
    # losses (eqn 16)
    target_rate: float = 0.5
    exec_target: float | None = None
    alpha_ctg: float = 1.0
    alpha_res: float = 1.0
    alpha_cls: float = 1.0
    ctg_base: float = 1e-4
    ctg_factor: float = 10.0
    macs_scope: str = "network"
    path_balance: float = 0.0  # per-sub-block rate term in L_res (see losses.path_balance_loss)
    dual_step: float = 0.0  # step of the MACs-ratio multiplier (see losses.DMNNLoss)
    # run
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    deterministic: bool = False
    preset: str | None = None

    def validate(self) -> None:
        if self.model not in list_models():
            raise ValueError(f"unknown model {self.model!r}: see `dmnn models`")
        if not 0.0 < self.target_rate <= 1.0:
            raise ValueError(f"target rate r must be in (0, 1], got {self.target_rate}")
        positive = ("epochs", "batch_size", "eval_batch_size", "sub_blocks", "hidden_dim",
                    "calibration_samples")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.schedule == "multistep" and not self.milestones:
            raise ValueError("schedule 'multistep' needs milestones (epochs where lr drops)")
        if self.macs_scope not in MACS_SCOPES:
            raise ValueError(f"macs_scope must be one of {MACS_SCOPES}, got {self.macs_scope!r}")
        if not 0.0 <= self.noise_anneal_from <= 1.0 or not 0.0 <= self.noise_final <= 1.0:
            raise ValueError("noise_anneal_from and noise_final must be in [0, 1]")
        if not isinstance(self.copies, int) or self.copies < 1:
            raise ValueError(f"copies must be an integer >= 1, got {self.copies!r}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.gate_warmup_epochs:
            if model_family(self.model) != "dmnn":
                raise ValueError("gate_warmup_epochs applies to dmnn_* models only")
            if not 0 < self.gate_warmup_epochs < self.epochs:
                raise ValueError(f"gate_warmup_epochs must be in [0, epochs), got "
                                 f"{self.gate_warmup_epochs} with {self.epochs} epochs")
        if self.router_finetune_epochs is not None:
            n = self.router_finetune_epochs
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < self.epochs:
                raise ValueError(f"router_finetune_epochs must be an integer in [0, epochs), got "
                                 f"{n!r} with {self.epochs} epochs")
            if n and model_family(self.model) != "drnet":
                raise ValueError("router_finetune_epochs applies to drnet_* models only (the "
                                 "other methods already train with hard gates)")
        self.loss_config()  # validates the loss fields

    @property
    def dynamic(self) -> bool:
        return model_family(self.model) != "static"

    def router_finetune(self) -> int:
        """Epochs at the end of the schedule trained with hard, frozen routers (DRNet §3.4):
        the configured number, else 20 % of the epochs for DRNet (at least 1) and 0 otherwise."""
        if self.router_finetune_epochs is not None:
            return self.router_finetune_epochs
        if model_family(self.model) != "drnet" or self.epochs < 2:
            return 0
        return max(1, round(0.2 * self.epochs))

    def calibration_metric(self) -> str | None:
        """What gate calibration holds at ``target_rate``: the quantity the method's resource
        loss targets (DMNN: the MACs ratio of ``macs_scope``; AIG: the execution rate; DRNet:
        the MACs ratio; LC-Net: the MACs ratio); None for static models."""
        family = model_family(self.model)
        if family == "dmnn":
            return "macs_ratio" if self.macs_scope == "network" else "macs_ratio_dynamic"
        if family == "aig":
            return "exec_rate"
        if family in ("drnet", "lcnet"):
            return "macs_ratio"  # both adapt their penalty weight to the network MACs fraction
        return None

    def loss_config(self) -> LossConfig:
        return LossConfig(
            target_rate=self.target_rate, exec_target=self.exec_target, alpha_ctg=self.alpha_ctg,
            alpha_res=self.alpha_res, alpha_cls=self.alpha_cls, ctg_base=self.ctg_base,
            ctg_factor=self.ctg_factor, category_supervision=self.category_supervision,
            macs_scope=self.macs_scope, path_balance=self.path_balance,
            dual_step=self.dual_step,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Every preset guards DMNN routing against collapse (docs/training.md, "Routing guards"):
# `--path-balance 0 --dual-step 0` gives the paper's loss exactly.
GUARDS: dict[str, Any] = {"path_balance": 0.25, "dual_step": 0.1}

PRESETS: dict[str, dict[str, Any]] = {
    # the embedded default: 8×8 digits from scikit-learn, a couple of minutes on 2 CPU cores
    "digits": {
        "dataset": "digits", "model": "dmnn_resnet20", "epochs": 15, "batch_size": 64,
        "lr": 0.05, "schedule": "cosine", "weight_decay": 5e-4, "target_rate": 0.5,
        **GUARDS, "dual_step": 0.5,  # 330 steps in all: λ must move faster
    },
    # the paper's CIFAR recipe (§4.1)
    "cifar": {
        "dataset": "cifar10", "model": "dmnn_resnet56", "epochs": 200, "batch_size": 256,
        "lr": 0.1, "schedule": "multistep", "milestones": [100, 150], "gamma": 0.1,
        "weight_decay": 1e-4, **GUARDS,
    },
    # the paper's ImageNet recipe (§4.1)
    "imagenet": {
        "dataset": "imagefolder", "model": "dmnn_resnet50", "epochs": 120, "batch_size": 256,
        "lr": 0.1, "schedule": "cosine", "weight_decay": 1e-4, "eval_batch_size": 128,
        **GUARDS,
    },
    # CIFAR-10 in under an hour on 2 CPU cores (ResNet-20: ~35 min static, ~45 min DMNN N=2)
    "cpu-fast": {
        "dataset": "cifar10", "model": "dmnn_resnet20", "epochs": 20, "batch_size": 128,
        "lr": 0.1, "schedule": "cosine", "warmup_epochs": 1, "weight_decay": 5e-4,
        **GUARDS,
    },
}


def _known_fields() -> set[str]:
    return {f.name for f in dataclasses.fields(TrainConfig)}


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file {p} not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        first = str(err).splitlines()[0]
        raise ValueError(f"config file {p} is not valid YAML: {first}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {p} must hold a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def resolve_config(
    preset: str | None = None, file: str | Path | None = None, overrides: dict | None = None
) -> TrainConfig:
    """Defaults < preset (from the argument or the file's ``preset:``) < file < overrides."""
    from_file = load_yaml(file) if file is not None else {}
    name = preset or from_file.get("preset")
    values: dict[str, Any] = {}
    if name is not None:
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
        values.update(PRESETS[name])
        values["preset"] = name
    values.update(from_file)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    unknown = sorted(set(values) - _known_fields())
    if unknown:
        raise ValueError(f"unknown config option {unknown[0]!r}: see `dmnn train --help`")
    cfg = TrainConfig(**values)
    cfg.validate()
    return cfg
