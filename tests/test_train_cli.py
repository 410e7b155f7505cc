"""dmnn train / eval from the command line: outputs, one-line errors, nothing half-written."""

import json
import pickle
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from dmnn.cli import app

runner = CliRunner()
TINY = ["--max-train-samples", "64", "--max-test-samples", "32", "--batch-size", "32",
        "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    result = runner.invoke(app, ["train", "--epochs", "1", "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    return out


def tensors_of(json_path, read=False):
    """The tensor file a checkpoint JSON names (its bytes with ``read``)."""
    name = json.loads(json_path.read_text())["tensors"]
    return (json_path.parent / name).read_bytes() if read else name


def test_train_writes_everything(trained):
    for name in ("config.yaml", "metrics.jsonl", "metrics.json", "last.json", "best.json"):
        assert (trained / name).is_file(), name
    for name in ("last", "best"):  # each JSON names its own, versioned tensor file
        tensors = json.loads((trained / f"{name}.json").read_text())["tensors"]
        assert (trained / tensors).is_file() and tensors.startswith(f"{name}.")
        assert len(list(trained.glob(f"{name}.*.safetensors"))) == 1, "old versions removed"
    assert not list(trained.glob(".*.tmp")), "no temp files left behind"


def test_eval_reports_and_writes_per_sample_file(trained, tmp_path):
    out = tmp_path / "ev"
    result = runner.invoke(app, ["eval", str(trained / "last.json"), "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["samples"] == 32 and 0.0 <= info["top1"] <= info["top5"] <= 1.0
    assert len(info["exec_rate_sub_block"]) == 9 and len(info["exec_rate_sub_block"]["0"]) == 2
    assert set(info["exec_rate_category"]) == {"group0", "group1", "group2"}
    from safetensors.torch import load_file

    per = load_file(str(out.with_suffix(".safetensors")))
    assert per["macs"].shape == (32,) and per["gates.0"].shape == (32, 2)
    assert abs(per["macs"].double().mean().item() - info["macs_mean"]) < 1e-6 * info["macs_mean"]
    saved = json.loads((trained / "metrics.json").read_text())
    assert info["top1"] == pytest.approx(saved["top1"])


def test_eval_default_output_sits_beside_the_checkpoint_and_never_overwrites_it(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    ckpt = [run / "last.json", run / tensors_of(run / "last.json")]
    before = [p.read_bytes() for p in ckpt]
    result = runner.invoke(app, ["eval", str(run / "last.json")])
    assert result.exit_code == 0, result.output
    assert [p.read_bytes() for p in ckpt] == before
    assert (run / "last.eval.safetensors").is_file() and (run / "last.eval.json").is_file()
    clash = runner.invoke(app, ["eval", str(run / "last.json"), "--out", str(run / "last")])
    assert clash.exit_code == 2 and "would overwrite the checkpoint" in clash.stderr
    assert [p.read_bytes() for p in ckpt] == before


def test_eval_refuses_a_checkpoint_for_another_architecture(trained, tmp_path):
    meta = json.loads((trained / "last.json").read_text())
    meta["model_kwargs"]["num_sub_blocks"] = 4
    (tmp_path / "x.json").write_text(json.dumps(meta))
    (tmp_path / "x.safetensors").write_bytes(tensors_of(trained / "last.json", read=True))
    meta["tensors"] = "x.safetensors"
    (tmp_path / "x.json").write_text(json.dumps(meta))
    result = runner.invoke(app, ["eval", str(tmp_path / "x.json")])
    assert result.exit_code == 2 and "does not match the model architecture" in result.stderr


def test_eval_refuses_a_corrupt_tensor_file(trained, tmp_path):
    meta = json.loads((trained / "last.json").read_text())
    (tmp_path / "c.json").write_text(json.dumps(meta | {"tensors": "c.safetensors"}))
    data = bytearray(tensors_of(trained / "last.json", read=True))
    data[-10] ^= 0xFF
    (tmp_path / "c.safetensors").write_bytes(bytes(data))
    result = runner.invoke(app, ["eval", str(tmp_path / "c.json")])
    assert result.exit_code == 2 and "corrupt" in result.stderr


CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck"]


def write_cifar10(root, n=10):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(root / name, "wb") as fh:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         "labels": list(range(n)), "batch_label": name}, fh)
    with open(root / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": CIFAR10}, fh)


@pytest.mark.parametrize("case", ["no-dir", "missing", "empty", "layout", "corrupt", "rate",
                                  "model", "dataset"])
def test_bad_input_one_line_nonzero_no_output(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "data"
    args = ["train", "--dataset", "cifar10", "--data-dir", str(data), "--epochs", "1", *TINY]
    if case == "no-dir":
        args = ["train", "--dataset", "cifar10", "--epochs", "1"]
    elif case == "empty":
        data.mkdir()
    elif case == "layout":
        data.mkdir()
        (data / "train").mkdir()
    elif case == "corrupt":
        write_cifar10(data)
        (data / "data_batch_3").write_bytes((data / "data_batch_3").read_bytes()[:100])
    elif case == "rate":
        write_cifar10(data)
        args += ["--target-rate", "1.5"]
    elif case == "model":
        args += ["--model", "resnet5"]
    elif case == "dataset":
        args = ["train", "--dataset", "svhn", "--epochs", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (case, result.output)
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists(), "nothing may be written on bad input"


def test_cifar_layout_trains_end_to_end(tmp_path):
    write_cifar10(tmp_path / "data")
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", "--preset", "cpu-fast", "--data-dir",
                                 str(tmp_path / "data"), "--epochs", "1", "--batch-size", "8",
                                 "--model", "dmnn_resnet20", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["dataset"] == "cifar10"


def test_runs_that_cannot_go_on_are_one_line_errors_too(trained, tmp_path, monkeypatch):
    again = runner.invoke(app, ["train", "--epochs", "1", "--out", str(trained), *TINY])
    assert again.exit_code == 1 and "already holds a run" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("dmnn.methods.dmnn.DMNNLoss.__call__", ctrl_c)
    out = tmp_path / "cut"
    cut = runner.invoke(app, ["train", "--epochs", "1", "--out", str(out), *TINY])
    assert cut.exit_code == 130, cut.output
    errors = [line for line in cut.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: interrupted")
    assert "no epoch had finished" in errors[0] and "Traceback" not in cut.stderr
    assert (out / "interrupted.json").is_file() and not list(out.glob(".*.tmp"))
