"""Checkpoints written before the package was reorganised still load and evaluate the same.

The files in tests/fixtures/legacy/ were made by commit 2146e19 (see make_checkpoints.py there):
one tiny digits run per method. Reloading them pins the checkpoint format, the registered
model names and kwargs, and every module's state_dict keys across refactors.
"""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dmnn.cli import app

HERE = Path(__file__).parent / "fixtures" / "legacy"
MODELS = ("resnet20", "twin_resnet20", "dmnn_resnet20", "aig_resnet20", "drnet_resnet20",
          "lcnet_resnet20")
ADDED_SINCE = ("gate_patterns",)  # summary keys newer than the fixtures: checked on their own


def same(a, b, path=""):
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-7), path
    else:
        assert a == b, path


@pytest.mark.parametrize("name", MODELS)
def test_legacy_checkpoint_evaluates_to_the_same_numbers(name, tmp_path):
    expected = json.loads((HERE / f"{name}.expected.json").read_text())
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", str(HERE / f"{name}.json"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(out.with_suffix(".json").read_text())
    summary.pop("per_sample_file")
    added = {k: summary.pop(k) for k in ADDED_SINCE if k in summary}
    same(expected["summary"], summary)
    from safetensors.torch import load_file

    from dmnn.evaluation.metrics import gate_patterns

    per_sample = load_file(str(out.with_suffix(".safetensors")))
    blocks = sorted(int(k.split(".")[1]) for k in per_sample if k.startswith("gates."))
    gates = [per_sample[f"gates.{i}"] for i in blocks]
    assert ("gate_patterns" in added) == bool(gates)  # every gated model's summary has one
    if gates:
        assert added["gate_patterns"] == gate_patterns(gates)
    assert per_sample["predictions"].tolist() == expected["predictions"]
    same(expected["macs"], per_sample["macs"].tolist())
