"""Data parallelism on CPU: 2-process gloo groups launched by the tests themselves (torchrun).

(a) one optimiser step on 2 × B/2 rows with --sync-bn equals one process on B rows;
(b) the dual multiplier λ is the same on every rank (and the single-process one);
(c) a 2-process checkpoint resumes in 1 process and back, on the same schedule;
(d) sharded evaluation and gate calibration give the single-process figures;
(e) a rank that dies ends the job with a clear report within a bounded time.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

WORKERS = Path(__file__).parent / "workers"
TINY = ["--max-train-samples", "400", "--max-test-samples", "101",  # 101: uneven eval shards
        "--calibration-samples", "150", "--batch-size", "32", "--eval-batch-size", "64",
        "--no-progress", "--seed", "3"]


def env() -> dict[str, str]:
    src = str(Path(__file__).parents[1] / "src")
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def torchrun(nproc: int, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env())


def dmnn(nproc: int, *args: str) -> subprocess.CompletedProcess:
    if nproc == 1:
        cmd = [sys.executable, "-m", "dmnn", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env())
    return torchrun(nproc, "-m", "dmnn", *args)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_step_equals_one_process_and_dual_agrees(tmp_path):
    ok(torchrun(2, str(WORKERS / "ddp_step.py"), str(tmp_path)))
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1)]
    for r in ranks:
        assert r["static_1"]["weights"] <= 1e-5  # (a) static backbone, SyncBN
        assert r["dmnn_1"]["weights"] <= 1e-5  # (a) DMNN: exec, FLOPs, balance, category, λ
        assert r["dmnn_local"]["weights"] > 1e-4  # local statistics would not match
        assert r["dmnn_5"]["dual"][-1] == pytest.approx(r["dmnn_5"]["dual_ref"], abs=1e-6)
        assert r["dmnn_5"]["dual"][-1] != 0.0
    assert ranks[0]["dmnn_5"]["dual"] == ranks[1]["dmnn_5"]["dual"]  # (b) bit-identical λ


@pytest.fixture(scope="module")
def run2(tmp_path_factory):
    """A DMNN run of 2 epochs trained by 2 processes (digits, uneven 101-image test split)."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    ok(dmnn(2, "train", "--out", str(out), "--epochs", "2", *TINY))
    return out


def lines(out: Path) -> list[dict]:
    return [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]


def test_rank0_alone_writes(run2):
    names = sorted(p.name for p in run2.iterdir() if not p.name.endswith(".safetensors"))
    assert names == ["best.json", "calibrated.json", "config.yaml", "last.json",
                     "metrics.json", "metrics.jsonl", "tb"]
    assert [r["epoch"] for r in lines(run2)] == [1, 2]  # one line per epoch, not per rank
    meta = json.loads((run2 / "last.json").read_text())
    assert meta["extra"]["world_size"] == 2
    assert meta["extra"]["steps_per_epoch"] == 6  # 200 rows a rank / 32, the last part dropped


def test_resume_in_one_process_and_back(run2, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run2, out)
    ok(dmnn(1, "train", "--out", str(out), "--resume", "--epochs", "3", "--no-progress"))
    meta = json.loads((out / "last.json").read_text())
    assert meta["extra"]["world_size"] == 1
    assert meta["extra"]["state"]["step"] == 3 * 12  # 400 rows / 32 in one process
    ok(dmnn(2, "train", "--out", str(out), "--resume", "--epochs", "4", "--no-progress"))
    meta = json.loads((out / "last.json").read_text())
    assert meta["extra"]["state"]["step"] == meta["scheduler"]["last_epoch"] == 4 * 6
    records = lines(out)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert all(math.isfinite(r["train_loss"]) and r["test_top1"] > 0.1 for r in records)


def test_sharded_eval_and_calibration_equal_one_process(run2, tmp_path):
    for n in (1, 2):
        ok(dmnn(n, "eval", str(run2 / "last.json"), "--out", str(tmp_path / f"e{n}")))
    one, two = (json.loads((tmp_path / f"e{n}.json").read_text()) for n in (1, 2))
    assert one["samples"] == two["samples"] == 101
    for key in ("top1", "top5", "macs_mean", "macs_ratio", "exec_rate_sub_block"):
        assert one[key] == two[key], key
    t1, t2 = (load_file(str(tmp_path / f"e{n}.safetensors")) for n in (1, 2))
    assert t1.keys() == t2.keys()
    for key in t1:  # per sample, in the split's order
        assert (t1[key] == t2[key]).all(), key
    # calibration: finishing the same trained weights again in one process
    out = tmp_path / "refinish"
    shutil.copytree(run2, out)
    ok(dmnn(1, "train", "--out", str(out), "--resume", "--no-progress"))
    first, again = (json.loads((p / "metrics.json").read_text()) for p in (run2, out))
    assert again["calibration"]["offset"] == pytest.approx(first["calibration"]["offset"],
                                                           abs=1e-9)
    assert again["calibration"]["after"] == pytest.approx(first["calibration"]["after"])
    assert again["top1"] == first["top1"] and again["macs_ratio"] == pytest.approx(
        first["macs_ratio"])


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the workers through /proc")
def test_a_dead_rank_ends_the_job(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           "-m", "dmnn", "train", "--out", str(out), "--epochs", "50", "--no-progress",
           "--dist-timeout", "30"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env())
    try:
        deadline = time.monotonic() + 120
        while not (out / "last.json").exists():  # an epoch has been trained and saved
            assert proc.poll() is None and time.monotonic() < deadline, "never trained"
            time.sleep(0.2)
        workers = sorted(_children(proc.pid))
        assert len(workers) == 2
        os.kill(workers[1], signal.SIGKILL)
        killed = time.monotonic()
        output, _ = proc.communicate(timeout=90)
        assert time.monotonic() - killed < 60, "the surviving rank must not hang"
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert "Root Cause" in output and "SIGKILL" in output
    ok(dmnn(1, "train", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"))


@pytest.mark.parametrize("flags, message", [
    (["--sync-bn"], "--sync-bn needs a process group"),
    (["--amp", "fp16"], "--amp fp16 needs CUDA"),
    (["--dist-backend", "nccl"], "--dist-backend nccl needs CUDA"),
])
def test_bad_distributed_flags(tmp_path, flags, message):
    from typer.testing import CliRunner

    from dmnn.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--out", str(out), *flags])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and message in result.output
    assert result.output.count("\n") == 1
    assert not out.exists()


def test_more_processes_than_test_images(tmp_path):
    out = tmp_path / "run"
    result = dmnn(2, "train", "--out", str(out), "--max-test-samples", "1", "--no-progress")
    assert result.returncode != 0
    assert "error: the test split has 1 images, fewer than the 2 processes" in result.stderr
    assert not out.exists()


def test_cpu_sync_bn_conversion_keeps_statistics_and_takes_bare_batchnorms():
    import torch
    from torch import nn

    from dmnn.distributed import sync_bn

    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.running_mean.fill_(0.25)
    bare = nn.BatchNorm2d(3, affine=False, track_running_stats=False)  # owns no tensor at all
    model = sync_bn.convert_sync_batchnorm(nn.Sequential(bn, bare), torch.device("cpu"))
    assert [type(m) for m in model] == [sync_bn.GlobalBatchNorm2d] * 2
    assert torch.equal(model[0].running_mean, torch.full((3,), 0.25))
    assert not list(model[1].state_dict())
