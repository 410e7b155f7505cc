"""The end of a run: gate calibration on held-out (or training) images, then the final
figures in metrics.json. Calibrated weights go to ``calibrated.*``; ``last.*`` keeps the trained
ones, so finishing again (``--resume`` on a finished run) calibrates from the same start."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data import DataBundle
from ..errors import TrainingInterrupted
from ..network.dynamic_net import DynamicNet
from ..network.latency_table import LatencyTable
from .calibration import Outcome, calibrate
from .config import TrainConfig
from .loop import RunState

UNCALIBRATED_KEYS = ("top1", "macs_mean", "macs_std", "macs_ratio", "latency_ratio")


def run_calibration(
    model: DynamicNet, data: DataBundle, cfg: TrainConfig, metric: str, *,
    input_size: int, device: torch.device, dist: Any,
    lockstep: Callable[[], AbstractContextManager[object]], progress: bool | None,
    last_path: Path, latency: LatencyTable | None = None,
) -> Outcome:
    """Calibrate ``model``'s gates to ``cfg.target_rate`` (:func:`.calibration.calibrate`): the
    candidate is chosen on the held-out images when the run has them, else on training images;
    BatchNorm is re-estimated on training images (each rank its shard under torchrun)."""
    train_images = data.plain_train_subset(cfg.calibration_samples, cfg.eval_batch_size,
                                           cfg.seed)
    chosen_on = data.holdout if data.holdout is not None else train_images
    if dist is not None:
        for loader in {id(x): x for x in (train_images, chosen_on)}.values():
            loader.shard(dist.rank, dist.world_size, pad=False)
    try:
        with lockstep():
            return calibrate(
                model, chosen_on, cfg.target_rate, input_size=input_size,
                bn_batches=train_images, metric=metric, device=device,
                slack=cfg.calibration_slack, max_cost=cfg.calibration_max_cost,
                images="held-out" if data.holdout is not None else "training",
                progress=progress, latency=latency,
            )
    except KeyboardInterrupt:
        raise TrainingInterrupted(
            f"interrupted during gate calibration: the trained weights are in {last_path}; "
            "`--resume` finishes the calibration") from None


def calibration_record(result: Outcome, uncalibrated: dict[str, Any]) -> dict[str, Any]:
    """metrics.json's ``calibration``: what was chosen and why, and the trained gates' figures."""
    return {**result.to_dict(),
            "uncalibrated": {k: uncalibrated[k] for k in UNCALIBRATED_KEYS if k in uncalibrated}}


def latency_note(metrics: dict[str, Any]) -> str:
    """``", predicted latency ratio 0.712 (batch 32)"`` when the run has a latency table."""
    if "latency_ratio" not in metrics:
        return ""
    return (f", predicted latency ratio {metrics['latency_ratio']:.3f} "
            f"(batch {metrics['latency_batch']})")


def say_calibrated(result: Outcome, metrics: dict[str, Any],
                   uncalibrated: dict[str, Any]) -> None:
    tqdm.write(
        f"{result.summary()}; test top1 {metrics['top1']:.4f}, MACs ratio "
        f"{metrics['macs_ratio']:.3f}{latency_note(metrics)} (uncalibrated "
        f"{uncalibrated['top1']:.4f}, {uncalibrated['macs_ratio']:.3f}"
        + (f", {uncalibrated['latency_ratio']:.3f}" if "latency_ratio" in uncalibrated else "")
        + ")"
    )


def final_metrics(cfg: TrainConfig, state: RunState, metrics: dict[str, Any],
                  calibration: dict[str, Any] | None) -> dict[str, Any]:
    """metrics.json: the run, its last (calibrated) evaluation, and the calibration record."""
    return {
        "model": cfg.model, "dataset": cfg.dataset, "target_rate": cfg.target_rate,
        "epochs": state.epoch, "train_seconds": state.train_seconds,
        "best_top1": state.best_top1, **metrics, "calibration": calibration,
    }
