"""The report's figures (paper Figs. 4–7 for one's own runs), drawn with matplotlib's object API
(``Figure``, no pyplot: no global state, no display needed).

Every function draws one figure from :class:`~dmnn.evaluation.runs.RunRecord` data, writes it
atomically and returns the numbers it plotted, so tests can check a figure shows its inputs.
Outputs are deterministic for the same inputs (no timestamps or random ids in the files).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import rc_context
from matplotlib.figure import Figure

from ..errors import UsageError
from ..files import atomic_write
from .runs import RunRecord

DPI = 100
MARKERS = {"static": "s", "twin": "D", "dmnn": "o", "aig": "^", "drnet": "v", "lcnet": "P"}
COLORS = {"static": "tab:gray", "twin": "tab:brown", "dmnn": "tab:blue", "aig": "tab:orange",
          "drnet": "tab:green", "lcnet": "tab:red"}
LAMBDA_KEYS = ("train_loss_dual", "train_loss_mu", "train_loss_lambda")
"""Per-method names of the adaptive multiplier in metrics.jsonl (DMNN λ, DRNet μ, LC-Net λ)."""


def save(fig: Figure, path: Path, fmt: str) -> Path:
    """Write ``fig`` to ``path`` atomically and reproducibly (no date, version or random ids)."""
    metadata: dict[str, Any] = ({"Software": None} if fmt == "png"
                                else {"Date": None, "Creator": None})

    def write(tmp: str) -> None:
        with rc_context({"svg.hashsalt": "dmnn", "svg.fonttype": "none"}):
            fig.savefig(tmp, format=fmt, dpi=DPI, metadata=metadata)

    return atomic_write(path, write)


def pareto(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The upper envelope of (cost, accuracy) points, by cost: a point stays when no point of
    lower or equal cost is as accurate (a wider net that a cheaper one beats is no frontier)."""
    kept: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not kept or y > kept[-1][1]:
            kept.append((x, y))
    return kept


def interpolate(points: Sequence[tuple[float, float]], x: float, near: float = 0.02
                ) -> float | None:
    """y of the piecewise-linear curve through ``points`` at ``x`` (the static frontier's top-1
    at a run's cost); just outside it (within ``near``) the nearest end's y; None further out."""
    pts = sorted(points)
    if not pts:
        return None
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    end = min(pts, key=lambda p: abs(p[0] - x))
    return end[1] if abs(end[0] - x) <= near else None


def frontier(runs: Sequence[RunRecord], path: Path, fmt: str = "png") -> dict[str, Any]:
    """Top-1 against mean MACs, one marker per method, static runs joined as the frontier; a
    second panel against measured latency when bench JSONs are there (Fig. 4). Every ungated run
    (backbones at any width, twins) is a candidate point of the static frontier, which is their
    upper envelope (:func:`pareto`)."""
    latency = [r for r in runs if r.bench]
    fig = Figure(figsize=(12 if latency else 6.5, 4.8))
    axes = fig.subplots(1, 2 if latency else 1, squeeze=False)[0]
    points = {r.name: (r.metrics["macs_mean"] / 1e6, 100 * r.metrics["top1"]) for r in runs}
    _scatter(axes[0], runs, points, "mean MACs per image (M)")
    plotted: dict[str, Any] = {"macs": points,
                               "static_frontier": pareto([points[r.name] for r in runs
                                                          if r.is_static])}
    if latency:
        batch = min(b for r in latency for b in r.bench)
        lat = {r.name: (_latency_ms(r.bench[batch]), 100 * r.metrics["top1"])
               for r in latency if batch in r.bench}
        _scatter(axes[1], [r for r in latency if r.name in lat], lat,
                 f"measured latency at batch {batch} (ms, this CPU)")
        plotted["latency"] = lat
    fig.suptitle(f"Accuracy against compute ({runs[0].dataset})")
    fig.tight_layout()
    save(fig, path, fmt)
    return plotted


def accuracy_against(runs: Sequence[RunRecord], cost: dict[str, float], xlabel: str,
                     path: Path, fmt: str = "png") -> dict[str, Any]:
    """Top-1 against any per-run cost measured elsewhere (e.g. latency ratios timed in one loop,
    ``scripts/frontier/latency.py``), static runs joined as the frontier. Runs without a cost
    are left out. Returns the plotted points and the static frontier."""
    kept = [r for r in runs if r.name in cost]
    if not kept:
        raise UsageError("no run has a cost to plot")
    points = {r.name: (cost[r.name], 100 * r.metrics["top1"]) for r in kept}
    fig = Figure(figsize=(6.5, 4.8))
    _scatter(fig.subplots(), kept, points, xlabel)
    fig.suptitle(f"Accuracy against measured cost ({kept[0].dataset})")
    fig.tight_layout()
    save(fig, path, fmt)
    return {"points": points,
            "static_frontier": pareto([points[r.name] for r in kept if r.is_static])}


def _latency_ms(bench: dict[str, Any]) -> float:
    ms = bench["latency_ms"]
    return float(ms.get("sparse", ms.get("model", ms.get("static"))))


def _scatter(ax: Any, runs: Sequence[RunRecord], points: dict[str, tuple[float, float]],
             xlabel: str) -> None:
    by_method: dict[str, list[tuple[float, float]]] = {}
    for r in runs:
        by_method.setdefault(r.method, []).append(points[r.name])
    for method, xy in sorted(by_method.items()):
        ax.scatter(*zip(*xy, strict=True), marker=MARKERS.get(method, "x"),
                   c=COLORS.get(method, "tab:purple"), s=60, label=method, zorder=3)
    static = pareto([points[r.name] for r in runs if r.is_static])
    if len(static) > 1:
        ax.plot(*zip(*static, strict=True), "k--", lw=1, label="static frontier", zorder=2)
    for r in runs:
        ax.annotate(r.name, points[r.name], textcoords="offset points", xytext=(4, 4),
                    fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def macs_histogram(run: RunRecord, path: Path, fmt: str = "png", bins: int = 30
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per-image MACs of a dynamic run, with its mean, the target r and the static MACs (Fig. 5).
    Returns (counts, bin edges in MACs)."""
    assert run.per_sample is not None
    macs = run.per_sample["macs"].astype(np.float64)
    counts, edges = np.histogram(macs, bins=bins)
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    ax.bar(edges[:-1] / 1e6, counts, width=np.diff(edges) / 1e6, align="edge",
           color="tab:blue", alpha=0.8)
    ax.axvline(macs.mean() / 1e6, color="k", lw=1.5, label=f"mean {macs.mean() / 1e6:.1f} M")
    full = run.metrics.get("macs_full")
    rate = run.metrics.get("target_rate")
    if full and rate:
        ax.axvline(rate * full / 1e6, color="tab:green", ls="--",
                   label=f"target r = {rate:g} ({rate * full / 1e6:.1f} M)")
    static = run.static_macs()
    if static:
        ax.axvline(static / 1e6, color="tab:red", ls=":", label=f"static {static / 1e6:.1f} M")
    ax.set_xlabel("MACs per test image (M)")
    ax.set_ylabel("images")
    ax.set_title(f"{run.name}: compute per image")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, path, fmt)
    return counts, edges


def exec_heatmap(run: RunRecord, path: Path, fmt: str = "png"
                 ) -> tuple[list[str], list[str], np.ndarray]:
    """Execution rate of every sub-block (rows) per category (columns) (Fig. 7): from the
    per-sample gates where present, else every block's rate from metrics.json."""
    rows, cols, matrix = exec_rates_by_category(run)
    fig = Figure(figsize=(max(4.5, 1.2 * len(cols) + 2.5), max(3.0, 0.28 * len(rows) + 1.5)))
    ax = fig.subplots()
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    if matrix.size <= 200:
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                    color="w" if v < 0.5 else "k")
    fig.colorbar(image, ax=ax, label="execution rate")
    ax.set_title(f"{run.name}: what runs for which category")
    fig.tight_layout()
    save(fig, path, fmt)
    return rows, cols, matrix


def exec_rates_by_category(run: RunRecord) -> tuple[list[str], list[str], np.ndarray]:
    per_cat = run.metrics.get("exec_rate_category") or {}
    cols = sorted(per_cat)
    if run.per_sample is not None and any(k.startswith("gates.") for k in run.per_sample):
        cats = run.per_sample["categories"]
        names = cols or [str(c) for c in sorted(set(cats.tolist()))]
        ids = sorted(set(cats.tolist()))
        rows, values = [], []
        blocks = sorted((int(k.split(".")[1]), k) for k in run.per_sample if k.startswith("gates."))
        for block, key in blocks:
            gates = run.per_sample[key].astype(np.float64)
            for n in range(gates.shape[1]):
                rows.append(f"block {block}.{n}" if gates.shape[1] > 1 else f"block {block}")
                values.append([gates[cats == c, n].mean() for c in ids])
        return rows, names if len(names) == len(ids) else [str(c) for c in ids], np.array(values)
    blocks = sorted({k for c in cols for k in per_cat[c] if k.isdigit()}, key=int)
    matrix = np.array([[per_cat[c][b] for c in cols] for b in blocks], dtype=np.float64)
    return [f"block {b}" for b in blocks], cols, matrix


def easy_and_hard(run: RunRecord, images: np.ndarray, class_names: Sequence[str], path: Path,
                  fmt: str = "png", classes: int = 4, per_side: int = 3) -> dict[int, Any]:
    """For a few classes, the test images with the least and the most MACs (Fig. 6). ``images``
    (n, H, W, C) in [0, 1], in the order of the per-sample records."""
    assert run.per_sample is not None
    macs, labels = run.per_sample["macs"].astype(np.float64), run.per_sample["labels"]
    chosen = sorted(set(labels.tolist()))[:classes]
    fig = Figure(figsize=(2 * per_side * 1.2 + 0.6, 1.45 * len(chosen) + 0.6))
    axes = fig.subplots(len(chosen), 2 * per_side, squeeze=False)
    shown: dict[int, Any] = {}
    for row, label in enumerate(chosen):
        idx = np.flatnonzero(labels == label)
        order = idx[np.argsort(macs[idx], kind="stable")]
        picks = list(order[:per_side]) + list(order[-per_side:])
        shown[label] = picks
        for col, i in enumerate(picks):
            ax = axes[row][col]
            ax.imshow(images[i].squeeze(), cmap="gray" if images.shape[-1] == 1 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{macs[i] / 1e6:.1f} M", fontsize=7)
        name = class_names[label] if label < len(class_names) else str(label)
        axes[row][0].set_ylabel(name, fontsize=8)
    fig.suptitle(f"{run.name}: least MACs (left) and most MACs (right)", fontsize=9)
    fig.tight_layout()
    save(fig, path, fmt)
    return shown


def curves(run: RunRecord, path: Path, fmt: str = "png") -> dict[str, list[float]]:
    """Training curves from metrics.jsonl: loss parts, top-1, MACs ratio, the adaptive
    multiplier and the gate-noise scale per epoch."""
    epochs = [e["epoch"] for e in run.epochs]
    keys = sorted({k for e in run.epochs for k in e})
    panels = [
        ("loss", [k for k in keys if k.startswith("train_loss")
                  and k not in LAMBDA_KEYS] + (["test_loss"] if "test_loss" in keys else [])),
        ("top-1", [k for k in ("train_top1", "test_top1") if k in keys]),
        ("MACs ratio", [k for k in ("train_macs_ratio", "test_macs_ratio") if k in keys]),
        ("multiplier (λ / μ)", [k for k in LAMBDA_KEYS if k in keys]),
        ("gate noise", [k for k in ("gate_noise",) if k in keys]),
    ]
    panels = [(title, ks) for title, ks in panels if ks]
    fig = Figure(figsize=(3.4 * len(panels), 3.4))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    series: dict[str, list[float]] = {}
    for ax, (title, ks) in zip(axes, panels, strict=True):
        for k in ks:
            ys = [e.get(k, np.nan) for e in run.epochs]
            series[k] = ys
            ax.plot(epochs, ys, marker=".", label=k.removeprefix("train_loss_") or k)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(f"{run.name}: training" + ("" if run.finished else " (still running)"),
                 fontsize=10)
    fig.tight_layout()
    save(fig, path, fmt)
    return series
