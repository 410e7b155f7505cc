"""Evaluation metrics: accuracy, per-sample MACs from the model's table, execution rates.

One pass keeps every sample (:class:`EvalRecord`); :func:`summarize_record` turns it into the
numbers of metrics.json and ``dmnn eval``. Training, gate calibration and ``dmnn eval`` all measure
through these two functions, so their figures agree by construction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..distributed.group import active
from ..distributed.shards import gather_rows
from ..errors import UsageError
from ..network.dynamic_net import DynamicNet
from ..network.latency_table import LatencyTable
from ..registry import list_models, method_of


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
    """Run ``model`` in eval mode (sparse execution) over ``batches`` and keep every sample.

    A loader sharded over a data-parallel job (``sharding`` (rank, K), K > 1) is read in
    lockstep by every rank; each gets the whole split's record, in the split's order."""
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
        raise UsageError("the evaluation split is empty")
    record = EvalRecord(
        macs=torch.cat(macs), predictions=torch.cat(preds), labels=torch.cat(labels),
        categories=torch.cat(cats), top5_hit=torch.cat(top5),
        gates=[torch.cat(g) if g else None for g in gates], loss_sum=loss_sum,
    )
    _, world = getattr(batches, "sharding", (0, 1))
    return gather_record(record, batches.num_samples) if world > 1 else record  # type: ignore


def gather_record(record: EvalRecord, total: int) -> EvalRecord:
    """Every rank's shard of a record, interleaved back into the split's order."""
    ctx = active()
    if ctx is None:
        raise RuntimeError("a sharded evaluation runs inside the job's DistContext.activate()")

    def rows(t: Tensor) -> Tensor:
        return gather_rows(ctx, t, total)

    return EvalRecord(
        macs=rows(record.macs), predictions=rows(record.predictions), labels=rows(record.labels),
        categories=rows(record.categories), top5_hit=rows(record.top5_hit),
        gates=[None if g is None else rows(g) for g in record.gates],
        loss_sum=ctx.all_sum([record.loss_sum])[0],
    )


def gate_patterns(gates: Sequence[Tensor | None], head: int = 5) -> dict[str, Any]:
    """The gate-pattern histogram: is the routing per image, or one static choice for all?

    A pattern is one image's on/off row over every gated block. Returns the number of distinct
    patterns, how many of them at least 5 % of the images take (#32's per-image test: at least
    4), and the shares of the ``head`` most common (1.0 first: static routing in effect)."""
    rows = [g.to(torch.uint8).flatten(1) for g in gates if g is not None]
    if not rows:
        return {"distinct": 1, "at_least_5pct": 1, "top_shares": [1.0]}
    _, counts = torch.cat(rows, dim=1).unique(dim=0, return_counts=True)
    shares = counts.double() / counts.sum()
    top = shares.sort(descending=True).values[:head]
    return {"distinct": int(counts.numel()), "at_least_5pct": int((shares >= 0.05).sum()),
            "top_shares": [round(v, 4) for v in top.tolist()]}


def summarize_record(
    record: EvalRecord, model: DynamicNet, input_size: int, category_names: Sequence[str] = (),
    latency: LatencyTable | None = None,
) -> dict[str, Any]:
    """Top-1/5, MACs mean ± std and ratios, execution rates per block, sub-block and category,
    the gate-pattern histogram (:func:`gate_patterns`); with a ``latency`` table, the predicted
    latency ratio to the static backbone at the table's batch size (``latency_ratio``,
    consecutive batches of the split)."""
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
    if latency is not None:
        out["latency_ratio"] = latency.predicted_ratio(record.gates)
        out["latency_batch"] = latency.batch
    gated = [(i, g.float()) for i, g in enumerate(record.gates) if g is not None]
    out["exec_rate_block"] = {str(i): g.mean().item() for i, g in gated}
    out["exec_rate_sub_block"] = {str(i): g.mean(dim=0).tolist() for i, g in gated}
    if gated:
        out["gate_patterns"] = gate_patterns(record.gates)
    per_cat: dict[str, dict[str, float]] = {}
    for c in record.categories.unique().tolist():
        mask = record.categories == c
        name = category_names[c] if c < len(category_names) else str(c)
        per_cat[name] = {str(i): g[mask].mean().item() for i, g in gated}
        per_cat[name]["macs_ratio"] = macs[mask].mean().item() / table.full
    out["exec_rate_category"] = per_cat
    name = model.arch.get("name")
    if name in list_models():  # what the model's method adds (a model built by hand: nothing)
        out.update(method_of(name).report(model, record))
    return out
