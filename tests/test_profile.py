"""``dmnn profile``: the latency table's arithmetic and shape (#33). No timing is asserted:
timing belongs in benchmarks."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from dmnn.cli import app
from dmnn.evaluation.profile import patterns, predict, profile_model
from dmnn.network.latency_table import FORMAT, pattern_counts

runner = CliRunner()


def hand_table() -> dict:
    """Two blocks of N = 2 with hand-set costs, and one ungated block."""
    costs = {"0": {"call_ms": 1.0, "row_ms": 0.5}, "1": {"call_ms": 2.0, "row_ms": 0.25},
             "0,1": {"call_ms": 3.0, "row_ms": 1.0}}
    block = {"gated": True, "base_ms": 0.5, "patterns": costs}
    return {"format": FORMAT, "stem_ms": 2.0, "head_ms": 1.0, "overhead_ms": 0.125,
            "blocks": [block, block, {"gated": False, "base_ms": 4.0, "patterns": {}}]}


def test_prediction_is_the_sum_of_the_parts_by_hand():
    # block 0: rows (on, off), (on, on), (off, off), (on, on): pattern 0 once, 0,1 twice
    g0 = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 1.0]])
    g1 = torch.zeros(4, 2)  # every row off: the block's base only
    assert pattern_counts(g0) == {(0,): 1, (0, 1): 2}
    expected = (2.0 + 1.0 + 0.125  # stem, head, overhead
                + 0.5 + (1.0 + 0.5 * 1) + (3.0 + 1.0 * 2)  # block 0
                + 0.5  # block 1
                + 4.0)  # the ungated block
    assert predict(hand_table(), [g0, g1, None]) == pytest.approx(expected)
    with pytest.raises(ValueError, match="3 blocks"):
        predict(hand_table(), [g0, g1])


def test_a_whole_batch_shared_work_and_the_scale_are_priced_by_hand():
    # a table of batch 4: pattern 0 on all 4 rows runs ungathered (its full_ms); two patterns in
    # one block pay the block's shared work once, not twice; the scale multiplies every price
    table = hand_table() | {"batch": 4, "scale": 1.5, "overhead_ms": 0.0}
    table["blocks"] = [dict(b) for b in table["blocks"]]
    table["blocks"][0]["patterns"] = {k: dict(c, full_ms=2.25)
                                      for k, c in table["blocks"][0]["patterns"].items()}
    table["blocks"][1]["shared_ms"] = 0.75
    whole = torch.tensor([[1.0, 0.0]] * 4)  # block 0: pattern 0 on every row
    two = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 0.0]])  # block 1: 0 and 1
    expected = 1.5 * (2.0 + 1.0 + 0.5 + 2.25 + 0.5 + (1.0 + 0.5 * 1) + (2.0 + 0.25 * 2) - 0.75
                      + 4.0)
    assert predict(table, [whole, two, None]) == pytest.approx(expected)
    # three rows of a batch-4 table are not a whole batch: priced as three gathered rows
    assert predict(table, [whole[:3], two[:3], None]) == pytest.approx(
        1.5 * (2.0 + 1.0 + 0.5 + (1.0 + 0.5 * 3) + 0.5 + (1.0 + 0.5) + (2.0 + 0.25 * 2) - 0.75
               + 4.0))


def test_a_pattern_cost_is_piecewise_linear_through_its_measured_points():
    from dmnn.evaluation.profile import row_counts
    from dmnn.network.latency_table import increment

    assert row_counts(32) == [1, 8, 16, 31] and row_counts(2) == [1] and row_counts(1) == [1]
    cost = {"call_ms": 9.0, "row_ms": 9.0, "points": [[1, 1.0], [8, 2.4], [16, 6.4]]}
    assert increment(cost, 1) == pytest.approx(1.0)
    assert increment(cost, 4) == pytest.approx(1.0 + 1.4 * 3 / 7)  # between 1 and 8
    assert increment(cost, 12) == pytest.approx(2.4 + 4.0 * 4 / 8)  # between 8 and 16
    assert increment(cost, 20) == pytest.approx(6.4 + 0.5 * 4)  # past the last: its slope
    assert increment({"call_ms": 1.0, "row_ms": 0.5, "points": [[1, 1.5]]}, 3) == 2.5


def test_above_three_sub_blocks_a_pattern_costs_the_sum_of_its_paths():
    assert len(patterns(2)) == 3 and len(patterns(3)) == 7 and patterns(4) == [(0,), (1,), (2,),
                                                                              (3,)]
    costs = {str(i): {"call_ms": 1.0 + i, "row_ms": 0.5} for i in range(4)}
    table = {"format": FORMAT, "stem_ms": 0.0, "head_ms": 0.0,
             "blocks": [{"gated": True, "base_ms": 1.0, "patterns": costs}]}
    g = torch.tensor([[1.0, 0.0, 1.0, 0.0]] * 3)  # pattern (0, 2) on 3 rows
    assert predict(table, [g]) == pytest.approx(1.0 + (1.0 + 0.5 * 3) + (3.0 + 0.5 * 3))


def test_a_profile_has_every_part_and_checks_itself():
    table = profile_model("dmnn_resnet20", batch=4, input_size=8, threads=1, repeats=1,
                          warmup=0, rates=(0.5,))
    assert table["format"] == "dmnn-latency/1" and table["batch"] == 4
    assert len(table["blocks"]) == 9
    assert all(set(b["patterns"]) == {"0", "1", "0,1"} for b in table["blocks"])
    assert all(c["row_ms"] >= 0 for b in table["blocks"] for c in b["patterns"].values())
    assert all("full_ms" in c for b in table["blocks"] for c in b["patterns"].values())
    assert all(b["shared_ms"] >= 0 for b in table["blocks"]) and table["scale"] > 0
    row = table["check"]["rows"][0]
    assert row["rate"] == 0.5 and row["measured_ms"] > 0  # (a prediction's sign is timing)
    assert row["error"] == pytest.approx((row["predicted_ms"] - row["measured_ms"])
                                         / row["measured_ms"])
    assert table["check"]["median_abs_error"] == abs(row["error"])
    assert table["static_ms"] > 0 and table["stem_ms"] > 0 and table["static_spread"] >= 0
    # the scale makes the table reproduce the all-on forward exactly, by construction
    on = [torch.ones(4, 2) for _ in range(9)]
    assert predict(table, on) == pytest.approx(table["all_on_ms"])
    json.dumps(table)  # plain numbers only


def test_profile_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "t.json"
    for args, needle in ((["profile", "resnet20", "--out", str(out)], "gated model"),
                         (["profile", "dmnn_resnet20", "--batch", "0"], "batch"),
                         (["profile", "no_such_model"], "unknown model name"),
                         (["profile", "dmnn_resnet20", "--out", str(tmp_path)], "--out")):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1, args
    assert not out.exists()


def test_profile_writes_its_table(tmp_path):
    out = tmp_path / "t.json"
    result = runner.invoke(app, ["profile", "dmnn_resnet20", "--batch", "2", "--input-size",
                                 "8", "--repeats", "1", "--warmup", "0", "--threads", "1",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = json.loads(out.read_text())
    assert table["model"] == "dmnn_resnet20" and "prediction error" in result.stdout
