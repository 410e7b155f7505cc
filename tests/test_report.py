"""dmnn report: every figure is written and decodes at its stated size, plots exactly its inputs,
is deterministic, and what cannot be drawn is skipped with a reason."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file
from typer.testing import CliRunner

from dmnn.cli import app
from dmnn.evaluation import figures
from dmnn.evaluation.runs import RunRecord, read_run

runner = CliRunner()
TINY = ["--epochs", "2", "--max-train-samples", "128", "--max-test-samples", "64",
        "--batch-size", "32", "--calibration-samples", "64", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "dmnn_run"
    assert runner.invoke(app, ["train", *TINY, "--out", str(out)]).exit_code == 0
    assert runner.invoke(app, ["eval", str(out / "calibrated.json")]).exit_code == 0
    static = out.parent / "static_run"
    assert runner.invoke(app, ["train", *TINY, "--model", "resnet20", "--out",
                               str(static)]).exit_code == 0
    return out


def size_of(path):
    with Image.open(path) as img:
        img.load()  # decodes the whole file
        return img.size


def test_every_figure_is_written_and_decodes_at_its_stated_size(run, tmp_path):
    out = tmp_path / "rep"
    result = runner.invoke(app, ["report", str(run), str(run.parent / "static_run"),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert names == {"index.md", "frontier.png", "dmnn_run_macs.png", "dmnn_run_exec.png",
                     "dmnn_run_easy_hard.png", "dmnn_run_curves.png", "static_run_curves.png"}
    assert size_of(out / "frontier.png") == (650, 480)
    assert size_of(out / "dmnn_run_macs.png") == (650, 400)
    assert size_of(out / "dmnn_run_curves.png") == (1700, 340)  # five panels of 3.4 in
    for name in names - {"index.md"}:
        assert min(size_of(out / name)) > 100, name
    index = (out / "index.md").read_text()
    assert all(f"]({n})" in index for n in names - {"index.md"})
    assert not list(out.glob(".*.tmp"))


def test_the_plotted_data_equal_the_inputs(run, tmp_path):
    record = read_run(run)
    macs = load_file(str(run / "calibrated.eval.safetensors"))["macs"]
    counts, edges = figures.macs_histogram(record, tmp_path / "h.png")
    assert np.array_equal(counts, np.histogram(macs, bins=30)[0])
    assert counts.sum() == 64 and edges[0] == macs.min()
    rows, cols, matrix = figures.exec_heatmap(record, tmp_path / "e.png")
    gates, cats = load_file(str(run / "calibrated.eval.safetensors"))["gates.3"], record.per_sample[
        "categories"]
    assert rows[6:8] == ["block 3.0", "block 3.1"]
    assert matrix[7, 0] == pytest.approx(gates[cats == 0, 1].mean())
    plotted = figures.frontier([record], tmp_path / "f.png")
    metrics = json.loads((run / "metrics.json").read_text())
    assert plotted["macs"]["dmnn_run"] == (metrics["macs_mean"] / 1e6, 100 * metrics["top1"])
    static = read_run(run.parent / "static_run")
    both = figures.frontier([record, static], tmp_path / "f2.png")
    assert both["static_frontier"] == [both["macs"]["static_run"]]  # the backbone, not DMNN
    cost = {"dmnn_run": 0.8, "static_run": 1.0, "not_a_run": 0.1}
    timed = figures.accuracy_against([record, static], cost, "latency", tmp_path / "l.png")
    assert timed["points"]["dmnn_run"] == (0.8, 100 * metrics["top1"])
    assert set(timed["points"]) == {"dmnn_run", "static_run"}  # only the runs given
    assert timed["static_frontier"] == [timed["points"]["static_run"]]
    assert min(size_of(tmp_path / "l.png")) > 100
    with pytest.raises(ValueError, match="no run has a cost"):
        figures.accuracy_against([record], {}, "latency", tmp_path / "none.png")
    series = figures.curves(record, tmp_path / "c.png")
    jsonl = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert series["test_top1"] == [e["test_top1"] for e in jsonl]
    assert series["gate_noise"] == [e["gate_noise"] for e in jsonl]


def test_without_per_sample_records_the_other_figures_still_come_and_skips_are_said(
        run, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(run, bare, ignore=shutil.ignore_patterns("*.eval.*"))
    out = tmp_path / "rep"
    result = runner.invoke(app, ["report", str(bare), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"index.md", "frontier.png", "bare_exec.png",
                                               "bare_curves.png"}
    assert "MACs histogram and easy/hard images (no per-sample records" in result.stderr
    assert "## Skipped" in (out / "index.md").read_text()
    record = read_run(bare)  # heatmap from metrics.json: every block's rate per category
    rows, cols, matrix = figures.exec_heatmap(record, tmp_path / "e.png")
    per_cat = json.loads((run / "metrics.json").read_text())["exec_rate_category"]
    assert rows == [f"block {i}" for i in range(9)] and cols == sorted(per_cat)
    assert all(matrix[b, j] == per_cat[c][str(b)] for b in range(9)
               for j, c in enumerate(cols))


def test_reports_are_deterministic(run, tmp_path):
    for fmt in ("png", "svg"):
        a, b = tmp_path / f"a{fmt}", tmp_path / f"b{fmt}"
        for out in (a, b):
            args = ["report", str(run), "--out", str(out), "--format", fmt]
            assert runner.invoke(app, args).exit_code == 0
        for p in a.iterdir():
            assert p.read_bytes() == (b / p.name).read_bytes(), p.name


def test_a_run_still_training_is_plotted_as_far_as_it_got(run, tmp_path):
    live = tmp_path / "live"
    shutil.copytree(run, live, ignore=shutil.ignore_patterns("metrics.json", "*.eval.*"))
    result = runner.invoke(app, ["report", str(live), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    assert "still training" in result.stderr and (tmp_path / "rep" / "live_curves.png").is_file()


def test_bad_input_is_one_line_and_writes_nothing(run, tmp_path):
    (tmp_path / "empty").mkdir()
    digits = json.loads((run / "metrics.json").read_text())
    (tmp_path / "other.json").write_text(json.dumps(digits | {"dataset": "cifar10"}))
    afile = tmp_path / "afile"
    afile.write_text("x")
    cases = [
        (["report", str(tmp_path / "empty"), "--out", str(tmp_path / "o1")], "holds no dmnn run"),
        (["report", str(run), str(tmp_path / "other.json"), "--out", str(tmp_path / "o2")],
         "--allow-mixed"),
        (["report", str(run), "--out", str(afile)], "exists and is not a folder"),
        (["report", str(run), "--out", str(tmp_path / "o3"), "--format", "gif"], "--format"),
    ]
    for args, needle in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and needle in result.stderr, (args, result.output)
        assert len(result.stderr.strip().splitlines()) == 1
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))
    mixed = runner.invoke(app, ["report", str(run), str(tmp_path / "other.json"), "--out",
                                str(tmp_path / "o4"), "--allow-mixed"])
    assert mixed.exit_code == 0, mixed.output


def test_the_static_frontier_is_the_upper_envelope():
    # hand-made: (cost, top-1); the 0.57-cost point is beaten by a cheaper one, so it is no
    # frontier point; equal cost keeps the better seed
    points = [(1.0, 69.1), (0.57, 66.4), (0.5, 67.5), (0.25, 64.1), (0.5, 67.0)]
    assert figures.pareto(points) == [(0.25, 64.1), (0.5, 67.5), (1.0, 69.1)]
    assert figures.pareto([]) == []


def test_frontier_latency_times_every_run_against_one_reference(run, tmp_path):
    # scripts/frontier/latency.py: one loop, paired ratios against the reference run
    script = Path(__file__).parents[1] / "scripts" / "frontier" / "latency.py"
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "lat"), str(run.parent), "--batch", "2",
         "--repeats", "3", "--warmup", "1", "--threads", "1", "--reference", "static_run"],
        capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "lat" / "latency_b2.json").read_text())
    assert set(result["runs"]) == {"dmnn_run", "static_run"}
    assert result["runs"]["static_run"]["latency_ratio"] == 1.0
    metrics = json.loads((run / "metrics.json").read_text())
    static_macs = json.loads((run.parent / "static_run" / "metrics.json").read_text())["macs_mean"]
    assert result["runs"]["dmnn_run"]["macs_ratio"] == pytest.approx(
        metrics["macs_mean"] / static_macs)
    assert "| dmnn_run |" in (tmp_path / "lat" / "latency_b2.md").read_text()
    assert min(size_of(tmp_path / "lat" / "latency_b2.png")) > 100


def test_frontier_table_rebuilds_from_its_copies_once_the_runs_are_gone(run, tmp_path):
    # scripts/frontier/table.py: the copies in DEST keep top-1, MACs and the last epoch's
    # training top-1, so the table survives the run folders (a fresh machine loses them)
    script = Path(__file__).parents[1] / "scripts" / "frontier" / "table.py"
    runs = tmp_path / "runs"
    shutil.copytree(run.parent, runs, ignore=shutil.ignore_patterns("lat", "rep*"))
    dest = tmp_path / "dest"

    def table(*sources):
        done = subprocess.run([sys.executable, str(script), str(dest), *map(str, sources)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return [row for row in (dest / "table.md").read_text().splitlines()
                if row.startswith("| ") and "_run |" in row]

    first = table(runs)
    last_train = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = f"{100 * last_train[-1]['train_top1']:.2f}"
    assert len(first) == 2 and f"| {train} |" in next(r for r in first if "| dmnn_run |" in r)
    shutil.rmtree(runs)
    assert table() == first
    assert (dest / "table.md").read_text().startswith(f"Runs in `{dest}/*.json`")


def test_frontier_gates_keep_the_rows_of_runs_whose_folders_are_gone(run, tmp_path):
    # scripts/frontier/gates.py: a run inspected now replaces its row, other rows are kept
    script = Path(__file__).parents[1] / "scripts" / "frontier" / "gates.py"
    dest = tmp_path / "gates.md"

    def gates(*runs):
        done = subprocess.run([sys.executable, str(script), str(dest), *map(str, runs)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return [r for r in dest.read_text().splitlines() if r.startswith("| ") and "---" not in r]

    first = gates(run)
    assert len(first) == 2 and first[1].startswith("| dmnn_run | ")
    dest.write_text(dest.read_text() + "| a_gone_run | 1.00 | 0.50 | 2 | 0.90 | 50.00 | 40.00 "
                    "| 30.00 | 1.00/0.00 |\n")
    again = gates(run)
    assert [r.split("|")[1].strip() for r in again[1:]] == ["a_gone_run", "dmnn_run"]
    assert again[2] == first[1]  # the same checkpoint, the same row


FRONTIER = Path(__file__).parents[1] / "scripts" / "frontier"


def test_frontier_table_shows_older_runs_as_todays_calibration_slack_leaves_them(load_script):
    # a run calibrated before --calibration-slack: within the default slack of r, today's
    # default keeps the trained thresholds, whose test figures the run recorded (hand-made)
    table = load_script("frontier/table.py")
    assert table.DEFAULT_SLACK == 0.01
    uncal = {"top1": 0.8757, "macs_mean": 20.5e6, "macs_std": 0.0}
    metrics = {"top1": 0.8471, "macs_mean": 20.3e6, "macs_std": 1e5, "calibration": {
        "before": 0.5057, "target": 0.5, "offset": -8.0, "uncalibrated": uncal}}
    shown, kept = table.as_today(metrics, {})
    assert kept and shown["top1"] == 0.8757 and shown["macs_mean"] == 20.5e6
    assert shown["calibrated_top1"] == 0.8471
    far = {**metrics, "calibration": {**metrics["calibration"], "before": 0.5101}}
    assert table.as_today(far, {}) == (far, False)  # outside the slack: calibrated as recorded
    assert table.as_today(metrics, {"calibration_slack": 0.0}) == (metrics, False)  # today's run
    unmoved = {**metrics, "calibration": {**metrics["calibration"], "offset": 0.0}}
    assert table.as_today(unmoved, {}) == (unmoved, False)
    assert table.as_today({"top1": 0.9, "macs_mean": 1.0}, {})[1] is False  # static run


def test_frontier_latency_figure_puts_only_the_full_width_backbone_at_one(monkeypatch,
                                                                          load_script):
    # scripts/frontier/figure.py: a width-scaled ResNet-20 is another network; placing it at the
    # reference's latency (1.0) without a bench of its own would invent a measurement
    monkeypatch.syspath_prepend(str(FRONTIER))  # figure.py imports table.py beside it
    figure = load_script("frontier/figure.py")

    def record(config):
        return RunRecord(
            "r", Path("r.json"), {"model": "resnet20", "top1": 0.9, "macs_mean": 1.0}, True,
            config=config)

    assert figure.reference(record({})) and figure.reference(record({"width_mult": 1.0}))
    assert not figure.reference(record({"width_mult": 0.5}))


def test_report_places_each_run_on_the_static_frontier_at_one_loops_latency(run, tmp_path):
    # --latency: ratios timed in one loop (hand-made here: timing belongs in benchmarks); the
    # frontier joins the static runs, and a gated run is read against it at its own latency
    static = json.loads((run.parent / "static_run" / "metrics.json").read_text())
    (tmp_path / "static_half.json").write_text(json.dumps(static | {"top1": 0.0625}))
    top1 = {"static_run": 100 * static["top1"], "static_half": 6.25}
    assert top1["static_run"] > top1["static_half"]  # both on the frontier
    timing = {"batch": 2, "threads": 1, "reference": "static_run",
              "runs": {"static_run": {"latency_ratio": 1.0}, "static_half": {"latency_ratio": 0.5},
                       "dmnn_run": {"latency_ratio": 0.75, "macs_ratio": 0.6}}}
    (tmp_path / "lat.json").write_text(json.dumps(timing))
    out = tmp_path / "rep"
    result = runner.invoke(app, ["report", str(run), str(run.parent / "static_run"),
                                 str(tmp_path / "static_half.json"), "--out", str(out),
                                 "--latency", str(tmp_path / "lat.json")])
    assert result.exit_code == 0, result.output
    index = (out / "index.md").read_text()
    there = (top1["static_run"] + top1["static_half"]) / 2  # halfway in latency
    dmnn_top1 = 100 * json.loads((run / "metrics.json").read_text())["top1"]
    assert (f"| dmnn_run | {dmnn_top1:.2f} | 0.600 | 0.750 | {there:.2f} "
            f"| {dmnn_top1 - there:+.2f} |") in index
    assert "| static_half | 6.25 |  | 0.500 | static |  |" in index
    assert "![latency_b2](latency_b2.png)" in index and min(size_of(out / "latency_b2.png")) > 100
    # bad files: one line, exit 2, nothing written
    (tmp_path / "bad.json").write_text(json.dumps({"runs": {"x": {}}}))
    for bad, needle in ((tmp_path / "none.json", "no such file"),
                        (tmp_path / "bad.json", "not a one-loop timing file")):
        result = runner.invoke(app, ["report", str(run), "--out", str(tmp_path / "o"),
                                     "--latency", str(bad)])
        assert result.exit_code == 2 and needle in result.stderr, result.output
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_frontier_table_divides_every_row_by_the_largest_static_backbone(tmp_path):
    # a shallower ResNet is a point of the ResNet-20 frontier, not its own reference (1.000)
    from dmnn.registry import create_model
    script = FRONTIER / "table.py"
    full = {m: create_model(m, num_classes=10).macs_table(32).full for m in ("resnet20", "resnet8")}
    for name, model, top1 in (("resnet20", "resnet20", 0.90), ("resnet8", "resnet8", 0.80)):
        (tmp_path / f"{name}.json").write_text(json.dumps(
            {"model": model, "dataset": "cifar10", "top1": top1, "macs_mean": full[model],
             "epochs": 2, "config": {"model": model, "dataset": "cifar10"}}))
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "table.md").read_text()
    assert "| MACs ÷ ResNet-20 |" in text and "÷ the full static ResNet-20's" in text
    row = next(r for r in text.splitlines() if r.startswith("| resnet8 |"))
    assert f"| {full['resnet8'] / full['resnet20']:.3f} |" in row
    assert full["resnet8"] / full["resnet20"] < 0.5
