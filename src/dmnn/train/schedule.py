"""The learning-rate schedule: linear warm-up, then cosine or step decay, per iteration."""

from __future__ import annotations

import math
from collections.abc import Callable

from .config import TrainConfig


def lr_factor(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Per-iteration LR multiplier (for ``torch.optim.lr_scheduler.LambdaLR``)."""
    total = cfg.epochs * steps_per_epoch
    warm = min(cfg.warmup_epochs, cfg.epochs - 1) * steps_per_epoch  # a short run still decays
    milestones = [m * steps_per_epoch for m in cfg.milestones]

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "cosine":
            progress = (step - warm) / max(1, total - warm)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return cfg.gamma ** sum(step >= m for m in milestones)

    return factor
