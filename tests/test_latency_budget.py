"""``--budget latency`` (#33 item 2): the expected latency against a brute-force enumeration,
gradients to the gates, every gated method and a plug-in priced through it, the end-to-end run,
and bad tables refused in one line with nothing written. Tables here are hand-made: timing
belongs in benchmarks, never in unit tests."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dmnn import create_model
from dmnn.cli import app
from dmnn.methods.base import Loss, LossOutput, Method
from dmnn.methods.objective import LatencyBudget, MacsBudget, budget_probs
from dmnn.network.latency_table import FORMAT, LatencyTable
from dmnn.network.routing import Routing
from dmnn.registry import method_of

runner = CliRunner()


def costs_for(n: int, points: bool = False) -> dict:
    """Hand-set per-pattern costs of a block of N sub-blocks (N ≤ 3: every pattern)."""
    out = {}
    for k in range(1, n + 1):
        for on in itertools.combinations(range(n), k):
            call, row = 0.5 + 0.25 * sum(on), 0.1 * (1 + len(on))
            cost = {"call_ms": call, "row_ms": row}
            if points:  # convex: a row costs more once many rows run
                cost["points"] = [[1, call + row], [2, call + 2.5 * row], [3, call + 5 * row]]
            out[",".join(map(str, on))] = cost
    return out


def table_for(model, *, batch: int = 4, input_size: int = 8, name: str = "dmnn_resnet20",
              points: bool = False, static: float = 24.0) -> dict:
    """A table shaped like ``model``'s blocks (hand-set costs)."""
    blocks = [{"index": b.index, "num_sub_blocks": b.num_sub_blocks, "gated": b.gate is not None,
               "controller_ms": 0.05, "base_ms": 0.2,
               "patterns": costs_for(b.num_sub_blocks, points) if b.gate is not None else {}}
              for b in model.blocks]
    return {"format": FORMAT, "model": name, "model_kwargs": {}, "batch": batch,
            "input_size": input_size, "device": "cpu", "stem_ms": 1.0, "head_ms": 0.5,
            "overhead_ms": 0.25, "static_ms": static, "blocks": blocks}


def small_table(batch: int, points: bool = False) -> LatencyTable:
    block = {"num_sub_blocks": 2, "gated": True, "base_ms": 0.3, "patterns": costs_for(2, points)}
    return LatencyTable({"format": FORMAT, "model": "m", "batch": batch, "input_size": 8,
                         "stem_ms": 1.0, "head_ms": 0.5, "overhead_ms": 0.0, "static_ms": 10.0,
                         "blocks": [block, {"num_sub_blocks": 1, "gated": False, "base_ms": 2.0,
                                            "patterns": {}}]})


def brute_force_ms(table: LatencyTable, probs: torch.Tensor) -> float:
    """E[predict_ms] over every deployed batch: each of its ``batch`` rows is one of the
    training rows (uniformly) with a gate pattern drawn from that row's probabilities."""
    rows, n = probs.shape
    draws = [(i, on) for i in range(rows) for on in itertools.product((0, 1), repeat=n)]

    def chance(i: int, on: tuple[int, ...]) -> float:
        p = probs[i]
        return float(torch.prod(torch.where(torch.tensor(on) == 1, p, 1 - p))) / rows

    total = 0.0
    for batch in itertools.product(draws, repeat=table.batch):
        weight = 1.0
        for i, on in batch:
            weight *= chance(i, on)
        gates = torch.tensor([on for _, on in batch], dtype=torch.float32)
        total += weight * table.predict_ms([gates, None])
    return total


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_expected_latency_equals_brute_force_enumeration_with_linear_costs(batch):
    probs = torch.tensor([[0.9, 0.2], [0.3, 0.6]], dtype=torch.float64)
    table = small_table(batch)
    got = table.expected_ms([probs, None]).item()
    assert got == pytest.approx(brute_force_ms(table, probs), rel=1e-9)
    assert table.expected_fraction([probs, None]).item() == pytest.approx(got / 10.0)


@pytest.mark.parametrize("batch", [2, 3])
def test_whole_batch_shared_work_and_scale_keep_the_expectation_exact(batch):
    # the profile's three corrections (a pattern on every row runs ungathered, a block's shared
    # work is paid once, one scale on every price) against the same enumeration
    probs = torch.tensor([[0.9, 0.2], [0.3, 0.6], [0.95, 0.9]], dtype=torch.float64)
    table = small_table(batch)
    table.data["scale"] = 1.25
    block = table.data["blocks"][0]
    block["shared_ms"] = 0.2
    for c in block["patterns"].values():
        c["full_ms"] = c["call_ms"] + c["row_ms"] * batch - 0.3
    got = table.expected_ms([probs, None]).item()
    assert got == pytest.approx(brute_force_ms(table, probs), rel=1e-9)
    assert got != pytest.approx(small_table(batch).expected_ms([probs, None]).item(), rel=1e-3)


def test_expected_latency_is_exact_at_batch_one_and_close_with_piecewise_costs():
    probs = torch.tensor([[0.9, 0.2], [0.3, 0.6], [0.5, 0.5]], dtype=torch.float64)
    one = small_table(1, points=True)
    assert one.expected_ms([probs, None]).item() == pytest.approx(brute_force_ms(one, probs))
    three = small_table(3, points=True)
    exact = brute_force_ms(three, probs)
    got = three.expected_ms([probs, None]).item()
    assert got != pytest.approx(exact, rel=1e-9)  # an approximation here, documented
    assert got == pytest.approx(exact, rel=0.03)


def test_the_reported_ratio_averages_whole_batches_of_the_tables_size():
    table = small_table(2)
    rows = torch.tensor([[1, 0], [1, 1], [0, 0], [0, 1], [1, 1]], dtype=torch.uint8)
    first, second = table.predict_ms([rows[:2], None]), table.predict_ms([rows[2:4], None])
    # batches of 2 in the split's order; the fifth row, no whole batch, is left out
    assert table.predicted_ratio([rows, None]) == pytest.approx((first + second) / 2 / 10.0)
    assert table.predicted_ratio([rows[:1], None]) == pytest.approx(
        table.predict_ms([rows[:1], None]) / 10.0)  # fewer rows than a batch: all of them


def test_one_certain_pattern_for_every_image_prices_as_its_prediction():
    # a deployed batch redraws its rows from the training batch's mix of patterns, so only
    # one pattern for every image is certain to come back as the same batch
    gates = torch.tensor([[1.0, 0.0]] * 5, dtype=torch.float64)
    table = small_table(3)
    assert table.expected_ms([gates, None]).item() == pytest.approx(
        table.predict_ms([gates[:3], None]))


def test_the_rows_gradient_keeps_the_value_and_turning_a_gate_off_always_saves():
    # calls dominate: a new pattern's first rows cost its whole call, so from all on the exact
    # expectation rises when any gate starts to turn off (its gradient holds the gates on)
    block = {"num_sub_blocks": 2, "gated": True, "base_ms": 0.1, "patterns": {
        key: {"call_ms": 5.0, "row_ms": 0.01} for key in ("0", "1", "0,1")}}
    table = LatencyTable({"format": FORMAT, "model": "m", "batch": 8, "input_size": 8,
                          "stem_ms": 0.0, "head_ms": 0.0, "static_ms": 10.0, "blocks": [block]})
    grads = {}
    for mode in ("exact", "rows"):
        p = torch.full((16, 2), 0.999, dtype=torch.float64, requires_grad=True)
        value = table.expected_ms([p], gradient=mode)
        value.backward()
        grads[mode] = (value.item(), p.grad.sum().item())
    assert grads["exact"][0] == pytest.approx(grads["rows"][0])  # the same value
    assert grads["exact"][1] < 0 < grads["rows"][1]  # on lowers it (exact); off lowers it (rows)
    with pytest.raises(ValueError, match="exact or rows"):
        table.expected_ms([p], gradient="mean")


def dmnn_routing(batch: int = 4):
    model = create_model("dmnn_resnet20", num_sub_blocks=2).train()
    x = torch.randn(batch, 3, 32, 32)
    logits, routing = model(x, return_routing=True)
    return model, logits, routing


def test_the_latency_fraction_sends_gradients_to_the_controllers():
    model, _, routing = dmnn_routing()
    table = LatencyTable(table_for(model))
    fraction = LatencyBudget(table).fraction(routing)
    assert 0 < fraction.item() < 1
    fraction.backward()
    grads = [b.gate.fc_gate.weight.grad for b in model.blocks if b.gate is not None]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_budget_probs_prefer_differentiable_probabilities_then_what_ran():
    g = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[0.7, 0.2]], requires_grad=True)
    ran = torch.tensor([[1.0, 1.0]])
    r = Routing(gates=[g, g, None], probs=[p, g, None], category_logits=[None] * 3,
                macs=torch.zeros(1, dtype=torch.float64), table=None, stages=[0, 0, 0],
                executed=[g, ran, None])  # type: ignore[arg-type]
    out = budget_probs(r)
    assert out[0] is p and out[1] is ran and out[2] is None


@pytest.mark.parametrize("method", ["dmnn", "aig", "drnet", "lcnet"])
def test_every_gated_method_measures_its_budget_through_the_latency_table(method):
    from dmnn.train.config import TrainConfig

    torch.manual_seed(0)
    name = f"{method}_resnet20"
    cfg = TrainConfig(model=name)
    model = create_model(name).train()
    table = LatencyTable(table_for(model, name=name))
    x = torch.randn(4 * cfg.method.train_copies(cfg), 3, 32, 32)
    labels = torch.randint(0, 10, (x.shape[0],))
    logits, routing = model(x, return_routing=True)
    macs_loss = method_of(name).loss(cfg, steps_per_epoch=10)
    lat_loss = method_of(name).loss(cfg, steps_per_epoch=10, budget=LatencyBudget(table))
    assert isinstance(macs_loss.budget, MacsBudget) and lat_loss.fraction(routing).item() == (
        pytest.approx(table.expected_fraction(budget_probs(routing)).item()))
    cats = torch.zeros_like(labels)
    before = lat_loss.state_dict()
    out = lat_loss(logits, routing, labels, cats)
    if method == "lcnet":  # its dual step moves its L1 weights by the latency gap
        gap = lat_loss.fraction(routing).item() - cfg.target_rate
        assert lat_loss.state_dict()["lam_block"] == pytest.approx(
            before["lam_block"] + lat_loss.step * gap)
    else:  # the latency term carries a gradient to the gates
        assert out.total.requires_grad
        macs = macs_loss(logits, routing, labels, cats).total.item()
        assert out.total.item() != pytest.approx(macs)


class FractionLoss(Loss):
    """A plug-in's loss that budgets through ``self.fraction``."""

    def terms(self, logits, routing, labels, categories=None) -> LossOutput:
        total = (self.fraction(routing) - 0.5) ** 2
        return LossOutput(total, {"total": total.detach()})


class Plug(Method):
    name = "plug"

    def build_loss(self, cfg, total_steps):
        return FractionLoss()


def test_a_plug_in_loss_gets_the_latency_budget_through_the_method_interface():
    from dmnn.train.config import TrainConfig

    model, logits, routing = dmnn_routing()
    table = LatencyTable(table_for(model))
    loss = Plug().loss(TrainConfig(), 10, budget=LatencyBudget(table))
    expected = (table.expected_fraction(budget_probs(routing)).item() - 0.5) ** 2
    assert loss(logits, routing, torch.zeros(4, dtype=torch.long)).total.item() == (
        pytest.approx(expected, rel=1e-5))


TINY = ["--max-train-samples", "64", "--max-test-samples", "32", "--batch-size", "32",
        "--eval-batch-size", "32", "--calibration-samples", "32", "--no-progress"]


@pytest.fixture
def table_file(tmp_path):
    def write(**kwargs) -> str:
        model = create_model(kwargs.get("name", "dmnn_resnet20"))
        path = tmp_path / f"table{len(list(tmp_path.glob('table*')))}.json"
        path.write_text(json.dumps(table_for(model, **kwargs)))
        return str(path)
    return write


def test_a_latency_budget_run_trains_calibrates_and_reports_the_predicted_ratio(
        table_file, tmp_path):
    out = tmp_path / "run"
    src = table_file()
    result = runner.invoke(app, ["train", "--epochs", "2", "--budget", "latency",
                                 "--latency-table", src, "--target-rate", "0.6",
                                 "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "latency_table.json").read_text()) == json.loads(Path(src).read_text())
    final = json.loads((out / "metrics.json").read_text())
    assert final["latency_batch"] == 4 and 0 < final["latency_ratio"] < 1
    assert final["calibration"]["metric"] == "latency_ratio"  # calibration holds what it trained
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert "train_loss_latency" in lines[0] and "train_loss_flops" not in lines[0]
    assert "predicted latency ratio" in result.output
    shown = runner.invoke(app, ["eval", str(out / "last.json"), "--out", str(tmp_path / "e")])
    assert shown.exit_code == 0, shown.output
    assert "predicted latency ratio" in shown.output  # the run folder's table, found
    bench = runner.invoke(app, ["bench", "--checkpoint", str(out / "last.json"), "--batch", "4",
                                "--repeats", "2", "--warmup", "0", "--json"])
    assert bench.exit_code == 0, bench.output
    timed = json.loads(bench.output[bench.output.index("{"):])
    # measured and predicted for the same batches, and the target they are held to
    assert timed["target_rate"] == 0.6 and timed["latency_ratio_vs_static"] > 0
    assert 0 < timed["predicted_latency_ratio_vs_static"] < 1


def test_a_table_profiled_at_the_start_is_kept_in_the_run_and_reused_on_resume(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--epochs", "1", "--budget", "latency", "--latency-batch", "32",
            "--target-rate", "1.0", "--threads", "1", "--out", str(out), *TINY]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "profiling dmnn_resnet20 at batch 32" in first.output
    saved = json.loads((out / "latency_table.json").read_text())
    assert saved["batch"] == 32 and saved["input_size"] == 8
    again = runner.invoke(app, ["train", "--resume", "--out", str(out), "--epochs", "2",
                                "--no-progress"])
    assert again.exit_code == 0, again.output
    assert "profiling" not in again.output  # the run's own prices, not new ones
    assert json.loads((out / "latency_table.json").read_text()) == saved


def bad_cases():
    return {
        "missing file": (lambda t, p: ["--budget", "latency", "--latency-table",
                                       str(p / "nope.json")], "no such file"),
        "another model": (lambda t, p: ["--budget", "latency", "--latency-table",
                                        t(name="dmnn_resnet56")], "profiled for dmnn_resnet56"),
        "another input size": (lambda t, p: ["--budget", "latency", "--latency-table",
                                             t(input_size=32)], "--input-size 8"),
        "another batch": (lambda t, p: ["--budget", "latency", "--latency-table", t(batch=4),
                                        "--latency-batch", "8"], "--batch 8"),
        "target below the floor": (lambda t, p: ["--budget", "latency", "--latency-table", t(),
                                                 "--target-rate", "0.05"], "raise --target-rate"),
        "no reachable target": (lambda t, p: ["--budget", "latency", "--latency-table",
                                              t(static=2.0)], "no --target-rate"),
        "static model": (lambda t, p: ["--budget", "latency", "--model", "resnet20"],
                         "has none"),
        "dynamic scope": (lambda t, p: ["--budget", "latency", "--macs-scope", "dynamic"],
                          "--macs-scope"),
    }


@pytest.mark.parametrize("case", sorted(bad_cases()))
def test_bad_latency_input_is_one_line_exit_2_and_nothing_written(case, table_file, tmp_path):
    build, needle = bad_cases()[case]
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--epochs", "1", "--out", str(out), *TINY,
                                 *build(table_file, tmp_path)])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], lines
    assert not out.exists()
