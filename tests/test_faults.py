"""What survives which fault (docs/guarantees.md): kills at every step of a checkpoint save,
runs that die before their first checkpoint, a full disk, half-written logs, Ctrl-C anywhere,
bad output paths and checkpoints, and inputs that cannot fit in memory."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest
from PIL import Image
from typer.testing import CliRunner

from dmnn.cli import app

runner = CliRunner()
TINY = ["--max-train-samples", "64", "--max-test-samples", "32", "--batch-size", "32",
        "--calibration-samples", "64", "--no-progress", "--deterministic"]
RUN = ["train", "--epochs", "2", *TINY]

KILL = textwrap.dedent("""
    import os, sys
    import dmnn.train.checkpoint as ck
    step, name, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
    seen = [0]
    def fault(at, path):
        if at == step and path.name == name + ".json":
            seen[0] += 1
            if seen[0] == nth:
                os._exit(9)  # as kill -9: no cleanup, no finally
    ck.FAULT = fault
    from dmnn.cli import app
    sys.argv = ["dmnn", *sys.argv[4:]]
    app()
""")


def lines(path):
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def check_consistent(run):
    """Every checkpoint's JSON names its one tensor file; nothing half-written is left."""
    assert not list(run.glob(".*.tmp")), list(run.glob(".*.tmp"))
    assert not (run / "interrupted.json").exists()
    for name in ("last", "best", "calibrated"):
        meta = json.loads((run / f"{name}.json").read_text())
        assert [p.name for p in run.glob(f"{name}.*.safetensors")] == [meta["tensors"]], name
    records = lines(run / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    best = max(records, key=lambda r: r["test_top1"])  # first of the maxima, as training keeps
    assert json.loads((run / "best.json").read_text())["epoch"] == best["epoch"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    result = runner.invoke(app, [*RUN, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("step", ["tensors-written", "tensors-renamed", "json-renamed"])
@pytest.mark.parametrize("name,nth", [("last", 1), ("best", 1), ("last", 3)])
def test_a_kill_at_any_step_of_any_save_resumes_to_the_same_result(
        step, name, nth, straight, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", KILL, step, name, str(nth), *RUN, "--out",
                           str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 9, proc.stderr[-2000:]
    result = runner.invoke(app, ["train", "--out", str(out), "--resume", "--no-progress"])
    assert result.exit_code == 0, result.output
    check_consistent(out)
    final = json.loads((out / "metrics.json").read_text())
    for key in ("top1", "macs_mean", "best_top1", "epochs"):
        assert final[key] == straight[key], key  # a resumed run is the same run


def test_a_pair_left_by_an_older_dmnn_is_recovered(tmp_path):
    """The old writer renamed the tensors before the JSON: a kill between the two left the old
    JSON naming the new tensors with the wrong hash, and the complete JSON as a temp file."""
    out = tmp_path / "run"
    assert runner.invoke(app, [*RUN, "--epochs", "1", "--out", str(out)]).exit_code == 0
    meta = json.loads((out / "last.json").read_text())
    (out / meta["tensors"]).rename(out / "last.safetensors")
    meta["tensors"] = "last.safetensors"
    (out / ".last.json.k1ll.tmp").write_text(json.dumps(meta))
    (out / "last.json").write_text(json.dumps(meta | {"sha256": "0" * 64}))
    (out / "metrics.json").unlink()
    ev = runner.invoke(app, ["eval", str(out / "last.json"), "--out", str(tmp_path / "ev")])
    assert ev.exit_code == 0, ev.output  # eval reads the complete pair, changes nothing
    assert (out / ".last.json.k1ll.tmp").exists()
    result = runner.invoke(app, ["train", "--out", str(out), "--resume", "--epochs", "2",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    check_consistent(out)


def test_a_run_that_died_before_its_first_checkpoint_starts_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("model: dmnn_resnet20\nepochs: 1\nmax_train_samples: 64\n"
                                     "max_test_samples: 32\nbatch_size: 32\n"
                                     "calibration_samples: 64\n")
    (out / "metrics.jsonl").write_text('{"epoch": 1, "train_lo')  # died mid-line, no checkpoint
    again = runner.invoke(app, [*RUN, "--out", str(out)])
    assert again.exit_code == 1 and "--resume to start it over" in again.stderr
    result = runner.invoke(app, ["train", "--out", str(out), "--resume", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "no checkpoint yet" in result.stderr and "starting it over" in result.stderr
    assert [r["epoch"] for r in lines(out / "metrics.jsonl")] == [1]


def test_a_half_written_metrics_line_is_dropped_on_resume(tmp_path):
    out = tmp_path / "run"
    assert runner.invoke(app, [*RUN, "--epochs", "1", "--out", str(out)]).exit_code == 0
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 2, "train_los')
    result = runner.invoke(app, ["train", "--out", str(out), "--resume", "--epochs", "2",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "dropped 1 half-written line" in result.stderr
    assert [r["epoch"] for r in lines(out / "metrics.jsonl")] == [1, 2]


def test_a_full_disk_is_one_line_naming_the_path(tmp_path, monkeypatch):
    def full(tensors, path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr("dmnn.train.checkpoint.save_file", full)
    result = runner.invoke(app, [*RUN, "--out", str(tmp_path / "run")])
    assert result.exit_code == 1, result.output
    last = result.stderr.splitlines()[-1]  # (after the one "training … into …" line)
    assert last == f"error: cannot write {tmp_path / 'run' / 'last.json'}: the disk is full"
    assert len(result.stderr.splitlines()) == 2
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_tensor_files_honour_the_umask_like_their_json(tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        assert runner.invoke(app, [*RUN, "--epochs", "1", "--out", str(out)]).exit_code == 0
    finally:
        os.umask(old)
    meta = json.loads((out / "last.json").read_text())
    modes = {stat.S_IMODE(p.stat().st_mode) for p in (out / "last.json", out / meta["tensors"])}
    assert modes == {0o644}


def test_a_bad_val_image_loses_no_epoch(tmp_path, image_folder):
    root = image_folder("data", per_class=4, size=(24, 24),
                        colour=lambda c, i: ((255, 0, 0), (0, 0, 255))[c])
    bad = root / "val" / "dog" / "3.png"
    bad.write_bytes(b"not a png")
    out = tmp_path / "run"
    args = ["train", "--model", "resnet20", "--dataset", "imagefolder", "--data-dir", str(root),
            "--epochs", "1", "--batch-size", "4", "--no-progress", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and str(bad) in result.stderr, result.output
    assert json.loads((out / "last.json").read_text())["extra"]["pending"]["epoch"] == 1
    Image.new("RGB", (24, 24), (0, 0, 255)).save(bad)
    result = runner.invoke(app, ["train", "--out", str(out), "--resume", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert [r["epoch"] for r in lines(out / "metrics.jsonl")] == [1]  # evaluated, not retrained
    assert json.loads((out / "last.json").read_text())["extra"]["input_size"] == 32  # resnet20's


def test_small_imagefolder_images_are_served_at_the_models_size_and_memory_is_checked(
        tmp_path, image_folder):
    root = image_folder("data", per_class=1, size=(32, 32), colour=lambda c, i: (9, 9, 9))
    out = tmp_path / "run"
    args = ["train", "--model", "dmnn_resnet20", "--dataset", "imagefolder", "--data-dir",
            str(root), "--epochs", "1", "--no-progress", "--out", str(out)]
    result = runner.invoke(app, [*args, "--image-size", "224", "--batch-size", "2",
                                 "--eval-batch-size", "1000000"])
    assert result.exit_code == 2 and "GiB of memory" in result.stderr, result.output
    assert not out.exists(), "nothing may be written on bad input"
    one = image_folder("one", classes=("cat",), per_class=1, size=(32, 32),
                       colour=lambda c, i: (0, 0, 0))
    result = runner.invoke(app, [*args[:6], str(one), *args[7:]])
    assert result.exit_code == 2 and "at least 2 classes" in result.stderr, result.output


def test_a_static_model_trains_when_the_default_grouping_does_not_fit(tmp_path, image_folder):
    import pickle

    import numpy as np

    root = tmp_path / "c10"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(root / name, "wb") as fh:
            pickle.dump({"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8),
                         "labels": list(range(10)), "batch_label": name}, fh)
    with open(root / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"thing{i}" for i in range(10)]}, fh)
    args = ["train", "--dataset", "cifar10", "--data-dir", str(root), "--epochs", "1",
            "--batch-size", "10", "--no-progress"]
    static = runner.invoke(app, [*args, "--model", "resnet20", "--out", str(tmp_path / "s")])
    assert static.exit_code == 0, static.output
    assert "one category" in static.stderr
    dmnn = runner.invoke(app, [*args, "--model", "dmnn_resnet20", "--out", str(tmp_path / "d")])
    assert dmnn.exit_code == 2 and "--categories" in dmnn.stderr  # DMNN trains with them


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert runner.invoke(app, [*RUN, "--out", str(out)]).exit_code == 0
    return out


def bad_cases(finished, tmp):
    afile = tmp / "afile"
    afile.write_text("x")
    meta = json.loads((finished / "last.json").read_text())
    (tmp / "nokey.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "tensors"}))
    (tmp / "badkey.json").write_text(json.dumps(meta | {"tensors": 5}))
    (tmp / "dir.yaml").mkdir()
    return [
        ([*RUN, "--out", str(afile)], "exists and is not a folder"),
        ([*RUN, "--out", "/dev/null"], "exists and is not a folder"),
        ([*RUN, "--out", ""], "--out must name a folder"),
        ([*RUN, "--lr", "nan"], "lr must be a finite number"),
        ([*RUN, "--lr", "inf"], "lr must be a finite number"),
        ([*RUN, "--path-balance", "nan"], "path_balance must be a finite number"),
        ([*RUN, "--threads", "-1"], "threads must be an integer >= 1"),
        ([*RUN, "--threads", "0"], "threads must be an integer >= 1"),
        ([*RUN, "--seed", "-1"], "seed must be an integer >= 0"),
        ([*RUN, "--config", str(tmp / "dir.yaml")], "is a folder"),
        (["bench", "dmnn_resnet20", "--threads", "0"], "threads must be an integer >= 1"),
        (["bench", "dmnn_resnet20", "--input-size", "100000"], "GiB of memory"),
        (["eval", str(tmp / "nokey.json")], "names no tensor file"),
        (["eval", str(tmp / "badkey.json")], "names no tensor file"),
        (["eval", str(finished / "last.json"), "--out", "/dev/null/x"], "--out"),
        (["train", "--out", str(finished), "--resume", "--epochs", "1"], "fewer than the 2"),
    ]


def test_bad_input_is_one_line_exit_2_and_writes_nothing(finished, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in finished.iterdir())
    config = (finished / "config.yaml").read_text()
    for args, needle in bad_cases(finished, tmp_path):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("error: ") and needle in result.stderr, (args,
                                                                                 result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, args
    assert not (tmp_path / "runs").exists(), "nothing written"
    assert sorted(p.name for p in finished.iterdir()) == before
    assert (finished / "config.yaml").read_text() == config  # --epochs 1 did not rewrite it


def test_an_unwritable_output_folder_is_refused_before_any_work(tmp_path, monkeypatch):
    real = os.access
    monkeypatch.setattr("dmnn.checks.os.access", lambda p, mode: (
        False if str(p).startswith(str(tmp_path)) else real(p, mode)))
    result = runner.invoke(app, [*RUN, "--out", str(tmp_path / "ro" / "run")])
    assert result.exit_code == 2 and "is not a writable folder" in result.stderr


def test_ctrl_c_anywhere_is_exit_130_and_one_line(tmp_path, monkeypatch):
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:  # start-up: data loading
        m.setattr("dmnn.train.data.load_dataset", ctrl_c)
        result = runner.invoke(app, [*RUN, "--out", str(tmp_path / "a")])
    assert result.exit_code == 130 and result.stderr == "error: interrupted: nothing was saved\n"
    with monkeypatch.context() as m:  # gate calibration: --resume finishes it
        m.setattr("dmnn.train.finish.calibrate", ctrl_c)
        result = runner.invoke(app, [*RUN, "--epochs", "1", "--out", str(tmp_path / "b")])
    assert result.exit_code == 130 and "--resume` finishes the calibration" in result.stderr
    result = runner.invoke(app, ["train", "--out", str(tmp_path / "b"), "--resume",
                                 "--no-progress"])
    assert result.exit_code == 0 and (tmp_path / "b" / "calibrated.json").is_file()
    with monkeypatch.context() as m:  # a second Ctrl-C while the first one's save runs
        m.setattr("dmnn.methods.dmnn.DMNNLoss.__call__", ctrl_c)
        import dmnn.train.checkpoint as ck

        m.setattr(ck, "FAULT", lambda at, path: ctrl_c() if path.name == "interrupted.json"
                  else None)
        result = runner.invoke(app, [*RUN, "--out", str(tmp_path / "c")])
    last = result.stderr.strip().splitlines()[-1]
    assert result.exit_code == 130 and "interrupted again" in last and "--resume" in last
    shutil.rmtree(tmp_path / "c")


def test_a_data_error_from_a_loader_worker_keeps_our_message(image_folder):
    """A worker re-raises exceptions as text; ours travel as a typed record instead, so the
    main process raises the worker's DataError with its own one-line message, unparsed."""
    from dmnn.data import load_dataset
    from dmnn.errors import DataError

    root = image_folder("d")
    bad = root / "val" / "dog" / "1.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    data = load_dataset("imagefolder", root, categories="none", batch_size=2,
                        eval_batch_size=2, num_workers=2, image_size=16)
    with pytest.raises(DataError) as caught:
        for _ in data.test:
            pass
    message = str(caught.value)
    assert message.startswith(f"cannot read image {bad} (") and "\n" not in message
    assert "Original Traceback" not in message and "DataLoader worker" not in message


def test_help_keeps_every_option_name_whole_at_80_columns():
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0 and "…" not in result.stdout
    for flag in ("--router-finetune-epochs", "--calibration-samples", "--noise-anneal-from"):
        assert flag in result.stdout


def test_a_long_benchmark_says_how_long_it_will_take(monkeypatch, capsys):
    from dmnn.cli import bench_cmd

    clock = iter([0.0, 20.0])  # start, then the first round took 20 s
    monkeypatch.setattr(bench_cmd.time, "perf_counter", lambda: next(clock))
    progress = bench_cmd.Progress(23)
    progress(1, 23)
    progress.close()
    assert "about 7.3 min more for 22 rounds" in capsys.readouterr().err


def test_a_first_save_killed_before_its_json_rename_resumes_from_the_temp_json(tmp_path):
    """Between writing the temp JSON and renaming it, the only complete JSON is the temp one."""
    out = tmp_path / "run"
    assert runner.invoke(app, [*RUN, "--epochs", "1", "--out", str(out)]).exit_code == 0
    (out / "last.json").rename(out / ".last.json.k1ll.tmp")
    (out / "metrics.json").unlink()
    result = runner.invoke(app, ["train", "--out", str(out), "--resume", "--epochs", "2",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    check_consistent(out)
