"""dmnn bench: argument errors, and the JSON it reports (no timing is asserted)."""

import json

import pytest
from typer.testing import CliRunner

from dmnn.cli import app

runner = CliRunner()


@pytest.mark.parametrize("args,needle", [
    (["bench", "nope"], "unknown model name"),
    (["bench", "resnet20"], "needs a gated model"),
    (["bench", "dmnn_resnet20", "--rate", "1.5"], "rate must be in [0, 1]"),
    (["bench", "dmnn_resnet20", "--rate", "-0.1"], "rate must be in [0, 1]"),
    (["bench", "dmnn_resnet20", "--batch", "0"], "batch must be >= 1"),
])
def test_bad_arguments_are_one_line_errors(args, needle):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_json_report_has_the_ratios_and_sparse_matches_masked():
    result = runner.invoke(app, ["bench", "dmnn_resnet20", "--batch", "4", "--repeats", "2",
                                 "--warmup", "0", "--rate", "0.5", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    for key in ("macs_ratio", "latency_ratio", "latency_ratio_vs_static", "controller_overhead"):
        assert isinstance(info[key], float), key
    assert 0.3 < info["macs_ratio"] < 0.7  # forced rate 0.5 on the sub-blocks
    assert info["max_abs_diff_sparse_vs_masked"] <= 1e-5
    assert set(info["latency_ms"]) == {"static", "twin", "all_on_masked", "all_on_sparse",
                                       "masked", "sparse"}
