"""The frontier table (#16): every finished run of a frontier group against the static frontier.

    python scripts/frontier/table.py DEST [SOURCE...]
    python scripts/frontier/table.py results/frontier/proxy RUNS/frontier-proxy

SOURCE: a folder of run folders, or a metrics JSON already in results/ (``results/cpu-fast/
resnet20.json``: the earlier cpu-fast runs, same preset and seed, count as frontier runs). For
every ``RUN/metrics.json``: copies the metrics (with the run's config and its last epoch's training
top-1, ``train_top1_last``) to ``DEST/RUN.json``, so the results outlive the run folder; the copies
already in DEST count too (a fresh copy replaces one), so ``table.py DEST`` alone rebuilds the
table from what is committed. Then writes ``DEST/table.md``: top-1, MACs as a fraction of the
largest full static backbone among the runs (ResNet-20 for the ResNet-20 groups, ResNet-56 for the
deep one: the network a user would deploy instead; counted from the modules by the MACs table; a
shallower static ResNet is a point below 1, not its own reference), the static frontier's top-1 at
the same MACs (piecewise linear between the ungated runs: backbones at any width and depth, twins
with k of N sub-blocks), the difference, the last epoch's training top-1, hours and, for gated runs
that recorded it, the gate-pattern histogram's summary (``gate_patterns``: distinct patterns, those
taken by at least 5 % of test images, the top pattern's share). Runs named ``NAME_sK`` are seeds of
``NAME``: a second table gives their mean and spread.

Every run is shown as today's default gate calibration leaves it: a run calibrated before
``--calibration-slack`` existed whose ratio on the calibration images was already within the
default slack of r would now keep its trained thresholds, so its uncalibrated test figures
(recorded in its metrics) are shown, marked †, with the calibrated top-1 in a note.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

from dmnn.evaluation.figures import interpolate, pareto
from dmnn.evaluation.runs import RunRecord, read_run
from dmnn.registry import backbone_of
from dmnn.train.config import TrainConfig

DEFAULT_SLACK: float = TrainConfig.calibration_slack


def as_today(metrics: dict, config: dict) -> tuple[dict, bool]:
    """(metrics as today's default calibration would report them, whether they differ from the
    recorded ones). Exact, not an estimate: δ = 0 leaves the trained weights, whose test figures
    the run recorded as ``calibration.uncalibrated``."""
    cal = metrics.get("calibration") or {}
    kept = cal.get("uncalibrated")
    if ("calibration_slack" in config or not kept or not cal.get("offset")
            or abs(cal["before"] - cal["target"]) > DEFAULT_SLACK):
        return metrics, False
    return {**metrics, **{k: kept[k] for k in ("top1", "macs_mean", "macs_std") if k in kept},
            "calibrated_top1": metrics["top1"]}, True


def display(backbone: str) -> str:
    """``resnet56`` → ``ResNet-56`` (other names as registered)."""
    return re.sub(r"^resnet(\d+)", r"ResNet-\1", backbone)


def seed_group(name: str) -> str:
    return re.sub(r"_s\d+$", "", name)


def runs_in(dest: Path, sources: list[str]) -> list[tuple[RunRecord, bool]]:
    """(record, whether to copy it into DEST) for every finished run the sources hold, then
    DEST's own results copies of runs the sources do not hold."""
    found = []
    for src in sources:
        path = Path(src)
        if path.is_file():
            found.append((read_run(path), False))
        elif (path / "metrics.json").is_file():  # one run folder
            found.append((read_run(path), True))
        else:
            found += [(read_run(m.parent), True) for m in sorted(path.glob("*/metrics.json"))]
    names = {run.name for run, _ in found}
    for copy in sorted(dest.glob("*.json")):
        data = json.loads(copy.read_text())
        stem = copy.name.removesuffix(".json")
        if isinstance(data, dict) and "top1" in data and "macs_mean" in data and stem not in names:
            found.append((read_run(copy), False))
    return found


def main(dest: str, *sources: str) -> None:
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for run, copy in runs_in(out, list(sources)):
        last = run.epochs[-1] if run.epochs else {}
        train_top1 = last.get("train_top1", run.metrics.get("train_top1_last"))
        if copy:
            metrics = dict(run.metrics, config=run.config, train_top1_last=train_top1)
            (out / f"{run.name}.json").write_text(
                json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        shown, kept = as_today(run.metrics, run.config)
        rows.append({
            "name": run.name, "model": run.model, "static": run.is_static, "kept": kept,
            "calibrated": 100 * run.metrics["top1"],
            "top1": 100 * shown["top1"], "macs": shown["macs_mean"],
            "backbone": (backbone_of(run.model), run.static_macs()),
            "train_top1": None if train_top1 is None else 100 * train_top1,
            "hours": run.metrics.get("train_seconds", 0.0) / 3600,
            "patterns": shown.get("gate_patterns"),
            "epochs": run.metrics.get("epochs"),
            "source": Path(run.config["init_from"]).name if run.config.get("init_from") else None,
        })
    # one reference for every row: the largest static backbone (ties: the first name)
    backbone, reference = max((r["backbone"] for r in rows), key=lambda b: (b[1], b[0]),
                              default=("resnet20", 1))
    for r in rows:
        r["macs"] /= reference
    epochs = {r["name"]: r["epochs"] for r in rows}
    for r in rows:  # a warm start's budget counts its source's epochs too
        r["budget"] = r["epochs"] + (epochs.get(r["source"]) or 0)
        r["shown"] = f"{epochs.get(r['source'], '?')}+{r['epochs']}" if r["source"] else r["epochs"]
    static: dict[int, list[tuple[float, float]]] = {}  # per budget, one point per seed group
    for budget in {r["budget"] for r in rows}:
        points: dict[str, list[dict]] = {}
        for r in rows:
            if r["static"] and r["budget"] == budget and not r["source"]:
                points.setdefault(seed_group(r["name"]), []).append(r)
        static[budget] = pareto([(statistics.mean(p["macs"] for p in g),
                                  statistics.mean(p["top1"] for p in g)) for g in points.values()])
    files = [s for s in sources if Path(s).is_file()]
    lines = [
        # run folders are copied into DEST: name only the result files read from elsewhere
        f"Runs in {', '.join(f'`{s}`' for s in (*files, f'{dest}/*.json'))} "
        "(`scripts/frontier/table.py`). MACs: "
        f"mean per image ÷ the full static {display(backbone)}'s; frontier: the ungated runs of "
        "the same epoch budget (a warm start "
        "counts its source's epochs, `source+own`; seeds averaged; their upper envelope), top-1 "
        "interpolated piecewise-linearly at that MACs.", "",
        f"| run | model | epochs | top-1 % | MACs ÷ {display(backbone)} | static frontier there "
        "| Δ top-1 | train top-1 % (last epoch) | hours | gate patterns: all, ≥ 5 % (top share) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(rows, key=lambda r: (not r["static"], -r["macs"], r["name"])):
        ref = None if r["static"] else interpolate(static[r["budget"]], r["macs"])
        there = "static" if r["static"] else "–" if ref is None else f"{ref:.2f}"
        delta = "" if ref is None else f"{r['top1'] - ref:+.2f}"
        train = "–" if r["train_top1"] is None else f"{r['train_top1']:.2f}"
        mark = " †" if r["kept"] else ""
        pats = r["patterns"]  # recorded by runs since #32; "" for static and older runs
        routing = "" if not pats else (f"{pats['distinct']}, {pats['at_least_5pct']} "
                                       f"({pats['top_shares'][0]:.2f})")
        lines.append(f"| {r['name']} | {r['model']} | {r['shown']} | {r['top1']:.2f}{mark} | "
                     f"{r['macs']:.3f} | {there} | {delta} | {train} | {r['hours']:.2f} "
                     f"| {routing} |")
    kept = [r for r in rows if r["kept"]]
    if kept:
        lines += ["", f"† Trained thresholds kept: the run was calibrated before "
                  f"`--calibration-slack` existed, and its ratio on the calibration images was "
                  f"within today's default slack ({DEFAULT_SLACK}) of r, so today's default leaves "
                  "it as trained; its recorded uncalibrated test figures are shown. Top-1 as "
                  "calibrated then: "
                  + ", ".join(f"{r['name']} {r['calibrated']:.2f}"
                              for r in sorted(kept, key=lambda r: r["name"])) + "."]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(f"{seed_group(r['name'])} ({r['epochs']} epochs)", []).append(r)
    seeded = {k: v for k, v in groups.items() if len(v) > 1}
    if seeded:
        lines += ["", "Seeds (`NAME`, `NAME_s1`, …): mean and spread (max − min).", "",
                  f"| run | seeds | top-1 % mean | spread | MACs ÷ {display(backbone)} mean |",
                  "|---|---:|---:|---:|---:|"]
        for name, runs in sorted(seeded.items()):
            tops = [r["top1"] for r in runs]
            lines.append(f"| {name} | {len(runs)} | {statistics.mean(tops):.2f} | "
                         f"{max(tops) - min(tops):.2f} | "
                         f"{statistics.mean(r['macs'] for r in runs):.3f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: table.py DEST [SOURCE...]")
    main(sys.argv[1], *sys.argv[2:])
