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
    (["bench", "dmnn_resnet20", "--batch", "0"], "batch must be an integer >= 1"),
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
    assert set(info["latency_ms"]) == {"static", "static_unfolded", "twin", "all_on_masked",
                                       "all_on_sparse", "all_on_fused", "masked", "sparse",
                                       "fused"}
    for key in ("latency_ratio_vs_static", "macs_ratio_vs_static", "all_on_vs_static",
                "static_folded_vs_unfolded"):  # the lead: against the static backbone
        assert isinstance(info[key], float), key
    assert info["macs_ratio_vs_static"] == pytest.approx(
        info["macs_sparse_mean"] / info["macs_static_backbone"])


TINY = ["--max-train-samples", "64", "--max-test-samples", "32", "--batch-size", "32",
        "--no-progress", "--epochs", "1"]


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_runs")
    for model in ("dmnn_resnet20", "resnet20"):
        result = runner.invoke(app, ["train", "--model", model, "--out", str(root / model), *TINY])
        assert result.exit_code == 0, result.output
    return root


def test_checkpoint_bench_times_the_models_own_gates_on_its_test_images(trained_runs, tmp_path):
    run = trained_runs / "dmnn_resnet20"
    ev = runner.invoke(app, ["eval", str(run / "last.json"), "--out", str(tmp_path / "ev")])
    assert ev.exit_code == 0, ev.output
    from safetensors.torch import load_file
    per_sample = load_file(str(tmp_path / "ev.safetensors"))["macs"]

    result = runner.invoke(app, ["bench", "--checkpoint", str(run / "last.json"), "--batch", "4",
                                 "--repeats", "2", "--warmup", "0", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["gates"] == "trained" and info["images"] == 8
    # the timed batches are the first 8 test images, so their MACs are eval's first 8
    assert info["macs_mean"] == pytest.approx(per_sample[:8].double().mean().item(), rel=1e-9)
    assert info["max_abs_diff_sparse_vs_masked"] <= 1e-5
    assert set(info["latency_ms"]) == {"static", "static_unfolded", "all_on_masked", "masked",
                                       "sparse", "fused"}
    assert info["macs_ratio_vs_static"] == pytest.approx(
        info["macs_mean"] / info["macs_static_backbone"])


def test_checkpoint_bench_of_a_static_model_compares_it_with_its_backbone(trained_runs):
    result = runner.invoke(app, ["bench", "--checkpoint", str(trained_runs / "resnet20" /
                                                               "last.json"),
                                 "--batch", "2", "--repeats", "1", "--warmup", "0", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["gates"] == "none"
    assert set(info["latency_ms"]) == {"static", "static_unfolded", "model"}
    assert info["macs_ratio_vs_static"] == pytest.approx(1.0)


@pytest.mark.parametrize("args,needle", [
    (["bench"], "give a MODEL"),
    (["bench", "dmnn_resnet20", "--checkpoint", "x.json"], "either MODEL or --checkpoint"),
    (["bench", "--checkpoint", "missing.json"], "missing.json"),
])
def test_checkpoint_bench_argument_errors(args, needle):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_paired_ratio_cancels_a_slow_phase_that_hits_both_variants():
    from dmnn.evaluation.latency import paired_ratio
    # repeat 2 ran in a slow phase (×10 for both): paired → 1.0, ratio of medians → 3.0
    sparse, masked = [1.0, 10.0, 3.0], [1.0, 10.0, 1.0]
    assert paired_ratio(sparse[:2], masked[:2]) == 1.0
    assert paired_ratio(sparse, masked) == 1.0
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])
