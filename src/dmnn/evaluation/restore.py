"""Restoring a run for evaluation: the model and the data of a checkpoint, then one pass."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..data import DataBundle
from ..errors import CheckpointError
from ..network.dynamic_net import DynamicNet
from ..network.latency_table import LatencyTable
from ..registry import create_model
from ..train.checkpoint import load_weights
from ..train.config import TrainConfig
from ..train.data import load_run_data
from ..train.device import pick_device
from .metrics import EvalRecord, collect, summarize_record


def load_for_eval(
    meta: dict[str, Any], tensors: dict[str, Tensor], data_dir: str | None, device: str,
    source: str = "",
) -> tuple[DynamicNet, DataBundle, TrainConfig]:
    """Rebuild the model and the data of a checkpoint (``data_dir`` may move the data)."""
    try:
        cfg = TrainConfig.from_dict(meta["extra"]["config"], saved=True)
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{source} has no usable training config ({err})") from None
    if data_dir is not None:
        cfg.data_dir = data_dir
    dev = pick_device(device)
    data = load_run_data(cfg)
    model = create_model(meta["model"], **meta["model_kwargs"])
    if (model.num_classes, model.in_chans) != (data.num_classes, data.in_chans):
        raise CheckpointError(
            f"{source} expects {model.num_classes} classes × {model.in_chans} channels, the data "
            f"has {data.num_classes} × {data.in_chans}: wrong --data-dir?"
        )
    load_weights(model, tensors, source)
    return model.to(dev), data, cfg


def run_eval(
    model: DynamicNet, data: DataBundle, cfg: TrainConfig, device: str,
    latency: LatencyTable | None = None,
) -> tuple[dict[str, Any], EvalRecord]:
    """One evaluation pass over the test split: the summary (with the run's identity; with a
    ``latency`` table, the predicted latency ratio) and the per-sample record."""
    record = collect(model, data.test, pick_device(device))
    summary = summarize_record(record, model, data.input_size, data.category_map.names,
                               latency)
    summary.update(model=cfg.model, dataset=cfg.dataset, target_rate=cfg.target_rate)
    return summary, record
