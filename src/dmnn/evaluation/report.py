"""``dmnn report``: figures of one or more runs and an ``index.md`` that shows them.

Which figures a run gets depends on what it holds: accuracy against MACs (and against latency
where bench JSONs sit beside it) for all runs together; per run, the per-image MACs histogram
and the easy/hard images (need ``dmnn eval``'s per-sample records; the images also the dataset),
the execution-rate heatmap, and the training curves (need ``metrics.jsonl``). What cannot be
drawn is listed as skipped, with the reason.

With ``latency=FILE`` (``--latency``: runs timed in one rotated loop against one reference,
``scripts/frontier/latency.py``'s ``latency_bB.json``) it also draws top-1 against that measured
latency ratio and tables every timed run against the static frontier at the same latency: a
bench of each run on its own (``bench_bB.json`` beside it) times it against its *own* backbone,
at another moment, so only one loop's ratios share an axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..checks import check_choice, check_output
from ..errors import DataError, UsageError
from ..files import atomic_write_text, read_json_input
from . import figures
from .runs import RunRecord, read_run

FORMATS = ("png", "svg")


@dataclass
class Report:
    figures: list[tuple[Path, str]] = field(default_factory=list)  # (file, caption)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)  # markdown lines for index.md


def load_runs(paths: Sequence[str | Path], allow_mixed: bool = False) -> list[RunRecord]:
    if not paths:
        raise UsageError("give at least one run: dmnn report RUN_DIR|EVAL.json|METRICS.json …")
    runs = [read_run(p) for p in paths]
    names = [r.name for r in runs]
    for i, r in enumerate(runs):  # unique names: they become file names
        if names.count(r.name) > 1:
            r.name = f"{r.name}_{i}"
    datasets = sorted({r.dataset for r in runs})
    if len(datasets) > 1 and not allow_mixed:
        raise UsageError(f"the runs are on different datasets ({', '.join(datasets)}): their "
                         "accuracies do not share an axis; pass --allow-mixed to plot them anyway")
    return runs


def read_latency(path: str | Path) -> dict:
    """A one-loop timing file (``latency_bB.json``); anything else is a one-line usage error."""
    hint = "give the latency_bB.json that scripts/frontier/latency.py writes"
    data = read_json_input(path, "--latency", hint)
    runs = data.get("runs") if isinstance(data, dict) else None
    if (not isinstance(runs, dict) or "batch" not in data or "reference" not in data
            or not all(isinstance(r, dict) and "latency_ratio" in r for r in runs.values())):
        raise UsageError(f"--latency {Path(path)} is not a one-loop timing file; {hint}")
    return data


def build_report(
    paths: Sequence[str | Path], out: Path, *, fmt: str = "png", data_dir: str | None = None,
    allow_mixed: bool = False, latency: str | Path | None = None,
) -> Report:
    """Write every figure the runs allow into ``out`` and ``out/index.md`` (written last)."""
    check_choice("--format", fmt, FORMATS)
    timing = None if latency is None else read_latency(latency)
    check_output(out, "--out", folder=True)
    runs = load_runs(paths, allow_mixed)
    report = Report()
    for r in runs:
        if not r.finished:
            report.notes.append(f"{r.name} is still training (no metrics.json): its last "
                                f"epoch ({len(r.epochs)}) is shown")
    scored = [r for r in runs if "top1" in r.metrics and "macs_mean" in r.metrics]
    if scored:
        path = out / f"frontier.{fmt}"
        figures.frontier(scored, path, fmt)
        latency = " and measured latency (right)" if any(r.bench for r in scored) else ""
        report.figures.append((path, f"Test top-1 against mean MACs per image{latency}, one "
                                     "marker per method; the dashed line joins the static runs."))
    if timing is not None and scored:
        _latency_frontier(scored, timing, out, fmt, report)
    for r in runs:
        _per_run(r, out, fmt, data_dir, report)
    _write_index(out, runs, report)
    return report


def _latency_frontier(runs: Sequence[RunRecord], timing: dict, out: Path, fmt: str,
                      report: Report) -> None:
    """Top-1 against one loop's measured latency ratio, and the table against the static
    frontier there (the upper envelope of the ungated runs, interpolated)."""
    timed = {name: row["latency_ratio"] for name, row in timing["runs"].items()}
    kept = [r for r in runs if r.name in timed]
    report.skipped += [f"{r.name}: not in the --latency file" for r in runs if r.name not in timed]
    if not kept:
        return
    batch, ref = timing["batch"], timing["reference"]
    path = out / f"latency_b{batch}.{fmt}"
    drawn = figures.accuracy_against(
        kept, {r.name: timed[r.name] for r in kept},
        f"latency ÷ {ref}, batch {batch}, {timing.get('threads', '?')} threads (one loop)",
        path, fmt)
    report.figures.append((path, f"Test top-1 against the latency ratio to `{ref}` measured in "
                                 f"one rotated loop at batch {batch}; the dashed line joins the "
                                 "static runs."))
    static = drawn["static_frontier"]
    lines = [f"## Against the static frontier at the same measured latency (batch {batch})", "",
             "| run | top-1 % | MACs ÷ reference | latency ÷ reference | static frontier there "
             "| Δ top-1 |", "|---|---:|---:|---:|---:|---:|"]
    for r in sorted(kept, key=lambda r: timed[r.name]):
        top1, ratio = 100 * r.metrics["top1"], timed[r.name]
        there = None if r.is_static else figures.interpolate(static, ratio)
        macs = timing["runs"][r.name].get("macs_ratio")
        shown = "static" if r.is_static else "–" if there is None else f"{there:.2f}"
        lines.append(f"| {r.name} | {top1:.2f} | {'' if macs is None else f'{macs:.3f}'} "
                     f"| {ratio:.3f} | {shown} "
                     f"| {'' if there is None else f'{top1 - there:+.2f}'} |")
    report.tables += lines + [""]


def _per_run(r: RunRecord, out: Path, fmt: str, data_dir: str | None, report: Report) -> None:
    if r.dynamic and r.per_sample is not None:
        path = out / f"{r.name}_macs.{fmt}"
        figures.macs_histogram(r, path, fmt)
        report.figures.append((path, f"{r.name}: MACs of every test image, with their mean, the "
                                     "target r and the static backbone's MACs."))
    elif r.dynamic:
        report.skipped.append(f"{r.name}: MACs histogram and easy/hard images (no per-sample "
                              "records: run `dmnn eval` on its checkpoint)")
    if r.dynamic and (r.metrics.get("exec_rate_category") or r.per_sample is not None):
        path = out / f"{r.name}_exec.{fmt}"
        rows, _, _ = figures.exec_heatmap(r, path, fmt)
        what = "sub-block" if any("." in row for row in rows) else "block"
        report.figures.append((path, f"{r.name}: execution rate of every {what} (rows) for the "
                                     "test images of each category (columns)."))
    if r.dynamic and r.per_sample is not None:
        images = _test_images(r, data_dir, report)
        if images is not None:
            path = out / f"{r.name}_easy_hard.{fmt}"
            figures.easy_and_hard(r, images[0], images[1], path, fmt)
            report.figures.append((path, f"{r.name}: for four classes, the test images that "
                                         "took the least (left) and the most (right) MACs."))
    if r.epochs:
        path = out / f"{r.name}_curves.{fmt}"
        figures.curves(r, path, fmt)
        report.figures.append((path, f"{r.name}: loss parts, top-1, MACs ratio, the adaptive "
                                     "multiplier and the gate-noise scale per epoch."))
    else:
        report.skipped.append(f"{r.name}: training curves (no metrics.jsonl)")


def _test_images(r: RunRecord, data_dir: str | None, report: Report
                 ) -> tuple[np.ndarray, list[str]] | None:
    """The test images of a run's dataset in [0, 1], (n, H, W, C), in per-sample order."""
    from ..data import load_dataset

    dataset = r.dataset
    if dataset != "digits" and data_dir is None and not r.config.get("data_dir"):
        report.skipped.append(f"{r.name}: easy/hard images (pass --data-dir to show them)")
        return None
    try:
        data = load_dataset(dataset, data_dir or r.config.get("data_dir"), categories="none",
                            batch_size=1, eval_batch_size=512,
                            max_test_samples=r.config.get("max_test_samples"),
                            seed=int(r.config.get("seed", 0)))
    except DataError as err:
        report.skipped.append(f"{r.name}: easy/hard images ({err})")
        return None
    chunks = [b.images for b in data.test]
    x = np.concatenate([c.numpy() for c in chunks])
    n = len(r.per_sample["macs"]) if r.per_sample is not None else 0
    if x.shape[0] != n:
        report.skipped.append(f"{r.name}: easy/hard images (the data has {x.shape[0]} test "
                              f"images, the records {n})")
        return None
    mean = np.array(data.spec.mean).reshape(1, -1, 1, 1)
    std = np.array(data.spec.std).reshape(1, -1, 1, 1)
    x = np.clip(x * std + mean, 0.0, 1.0).transpose(0, 2, 3, 1)
    return x, list(data.spec.class_names)


def _write_index(out: Path, runs: Sequence[RunRecord], report: Report) -> None:
    lines = ["# dmnn report", "", "Runs: " + ", ".join(f"`{r.name}` ({r.model})" for r in runs),
             ""]
    lines += [f"- {note}" for note in report.notes] + ([""] if report.notes else [])
    for path, caption in report.figures:
        lines += [f"![{path.stem}]({path.name})", "", caption, ""]
    lines += report.tables
    if report.skipped:
        lines += ["## Skipped", ""] + [f"- {s}" for s in report.skipped] + [""]
    atomic_write_text(out / "index.md", "\n".join(lines))
