"""Honest evaluation: accuracy, per-sample MACs from the model's table, execution rates."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .models.network import DynamicNet


@dataclass
class EvalRecord:
    """Per-sample results of one pass over a split (what reports read)."""

    macs: Tensor  # (n,) float64
    predictions: Tensor  # (n,) int64
    labels: Tensor  # (n,) int64
    categories: Tensor  # (n,) int64
    top5_hit: Tensor  # (n,) bool
    gates: list[Tensor | None]  # per block (n, N) uint8 of what ran, None for always-on blocks
    loss_sum: float

    def tensors(self) -> dict[str, Tensor]:
        out = {
            "macs": self.macs, "predictions": self.predictions, "labels": self.labels,
            "categories": self.categories, "top5_hit": self.top5_hit.to(torch.uint8),
        }
        for i, g in enumerate(self.gates):
            if g is not None:
                out[f"gates.{i}"] = g
        return out


@torch.no_grad()
def collect(model: DynamicNet, batches: Iterable, device: torch.device) -> EvalRecord:
    """Run ``model`` in eval mode (sparse execution) over ``batches`` and keep every sample."""
    model.eval()
    macs, preds, labels, cats, top5, loss_sum = [], [], [], [], [], 0.0
    gates: list[list[Tensor]] | None = None
    for batch in batches:
        x = batch.images.to(device, non_blocking=True)
        y = batch.labels.to(device, non_blocking=True)
        logits, routing = model(x, return_routing=True)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        preds.append(top[:, 0].cpu())
        top5.append((top == y[:, None]).any(dim=1).cpu())
        labels.append(batch.labels.cpu())
        cats.append(batch.categories.cpu())
        macs.append(routing.macs.detach().cpu())
        if gates is None:
            gates = [[] for _ in routing.gates]
        for store, g in zip(gates, routing.executed or routing.gates, strict=True):
            if g is not None:
                store.append(g.detach().to(torch.uint8).cpu())
    if gates is None:
        raise ValueError("the evaluation split is empty")
    return EvalRecord(
        macs=torch.cat(macs), predictions=torch.cat(preds), labels=torch.cat(labels),
        categories=torch.cat(cats), top5_hit=torch.cat(top5),
        gates=[torch.cat(g) if g else None for g in gates], loss_sum=loss_sum,
    )


def summarize_record(
    record: EvalRecord, model: DynamicNet, input_size: int, category_names: Sequence[str] = ()
) -> dict[str, Any]:
    """Top-1/5, MACs mean ± std and ratios, execution rates per block, sub-block and category."""
    table = model.macs_table(input_size)
    n = record.labels.numel()
    macs = record.macs
    dyn = table.dynamic_full
    out: dict[str, Any] = {
        "samples": n,
        "top1": (record.predictions == record.labels).float().mean().item(),
        "top5": record.top5_hit.float().mean().item(),
        "loss": record.loss_sum / n,
        "macs_mean": macs.mean().item(),
        "macs_std": macs.std(unbiased=False).item(),
        "macs_full": table.full,
        "macs_min": table.minimum,
        "macs_ratio": macs.mean().item() / table.full,
        "macs_ratio_dynamic": ((macs.mean().item() - table.static) / dyn) if dyn else 1.0,
        "params": model.num_params(),
    }
    gated = [(i, g.float()) for i, g in enumerate(record.gates) if g is not None]
    out["exec_rate_block"] = {str(i): g.mean().item() for i, g in gated}
    out["exec_rate_sub_block"] = {str(i): g.mean(dim=0).tolist() for i, g in gated}
    per_cat: dict[str, dict[str, float]] = {}
    for c in record.categories.unique().tolist():
        mask = record.categories == c
        name = category_names[c] if c < len(category_names) else str(c)
        per_cat[name] = {str(i): g[mask].mean().item() for i, g in gated}
        per_cat[name]["macs_ratio"] = macs[mask].mean().item() / table.full
    out["exec_rate_category"] = per_cat
    return out


def load_for_eval(
    meta: dict[str, Any], tensors: dict[str, Tensor], data_dir: str | None, device: str,
    source: str = "",
):
    """Rebuild the model and the data of a checkpoint (``data_dir`` may move the data)."""
    from .checkpoint import CheckpointError, load_weights
    from .config import TrainConfig
    from .data import load_dataset
    from .engine import pick_device
    from .registry import create_model

    try:
        cfg = TrainConfig(**meta["extra"]["config"])
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{source} has no usable training config ({err})") from None
    if data_dir is not None:
        cfg.data_dir = data_dir
    dev = pick_device(device)
    data = load_dataset(
        cfg.dataset, cfg.data_dir, categories=cfg.categories, batch_size=cfg.batch_size,
        eval_batch_size=cfg.eval_batch_size, num_workers=cfg.workers, seed=cfg.seed,
        max_test_samples=cfg.max_test_samples,
    )
    model = create_model(meta["model"], **meta["model_kwargs"])
    if (model.num_classes, model.in_chans) != (data.num_classes, data.in_chans):
        raise CheckpointError(
            f"{source} expects {model.num_classes} classes × {model.in_chans} channels, the data "
            f"has {data.num_classes} × {data.in_chans}: wrong --data-dir?"
        )
    load_weights(model, tensors, source)
    return model.to(dev), data, cfg


def run_eval(model: DynamicNet, data, cfg, device: str) -> tuple[dict[str, Any], EvalRecord]:
    from .engine import pick_device

    record = collect(model, data.test, pick_device(device))
    summary = summarize_record(record, model, data.input_size, data.category_map.names)
    summary.update(model=cfg.model, dataset=cfg.dataset, target_rate=cfg.target_rate)
    return summary, record
