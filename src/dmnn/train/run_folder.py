"""The run folder: what it must hold before a run starts or resumes, the files a run appends
to, and the repair of what a crash left.

A run folder holds ``config.yaml``, ``metrics.jsonl`` (one line per finished epoch),
``metrics.json`` (the final figures), ``tb/`` (TensorBoard) and the checkpoints ``last``,
``best``, ``calibrated`` and ``interrupted`` (:mod:`.checkpoint`). Only the main rank writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from ..checks import check_output
from ..errors import TrainingError, UsageError
from ..files import atomic_write_bytes, atomic_write_json, writing
from .checkpoint import read_meta, recoverable, remove_checkpoint, repair, tidy
from .data import say


class RunFolder:
    """One training run's folder (``--out``)."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        self.writer = None  # TensorBoard, while the run is open

    @property
    def last_path(self) -> Path:
        return self.out / "last.json"

    def has_checkpoint(self) -> bool:
        """Whether ``last`` can be resumed (also from a save a crash interrupted)."""
        return self.last_path.is_file() or recoverable(self.last_path)

    def last_epoch(self) -> int:
        """The epochs ``last`` holds (what is saved, not what ran since)."""
        return read_meta(self.last_path)["epoch"]

    def check(self, resume: bool, epochs: int) -> None:
        """Fail before any work if the folder does not fit ``resume`` (nothing written)."""
        check_output(self.out, "--out", folder=True)
        has_checkpoint = self.has_checkpoint()
        started = (self.out / "metrics.jsonl").exists() or (self.out / "config.yaml").exists()
        if resume and not has_checkpoint and not started:
            raise TrainingError(f"--resume: no checkpoint {self.last_path} to resume from")
        if resume and self.last_path.is_file():
            trained = read_meta(self.last_path)["extra"]["state"]["epoch"]
            if trained > epochs:
                raise UsageError(
                    f"--epochs {epochs} is fewer than the {trained} epochs {self.out} "
                    f"has trained: pass --epochs {trained} or more")
        if not resume and (has_checkpoint or (self.out / "metrics.jsonl").exists()):
            then = ("continue it" if has_checkpoint
                    else "start it over (it has no checkpoint yet)")
            raise TrainingError(
                f"{self.out} already holds a run: pass --resume to {then}, or another --out"
            )

    def prepare(self, config: dict[str, Any], done: int) -> None:
        """Write the config, keep the metrics lines of the ``done`` epochs, and repair what a
        crash left (after ``last`` was loaded, which verified and repaired it)."""
        with writing(self.out / "config.yaml"):
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.out / "config.yaml",
                               yaml.safe_dump(config, sort_keys=True).encode())
            self.truncate_metrics(done)
        if self.last_path.is_file():
            tidy(self.out / "last", keep=read_meta(self.last_path)["tensors"])
        for name in ("best", "calibrated"):
            repair(self.out / name)
        remove_checkpoint(self.out / "interrupted")  # stale once the run goes on from last

    def truncate_metrics(self, done: int) -> None:
        """Drop metrics lines of epochs past ``done`` (they will be redone) and a half-written
        line a crash left."""
        path = self.out / "metrics.jsonl"
        if not path.exists():
            return
        kept, broken = [], 0
        for line in path.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                epoch = json.loads(line)["epoch"]
            except (json.JSONDecodeError, KeyError, TypeError):
                broken += 1
                continue
            if epoch <= done:
                kept.append(line)
        if broken:
            say(f"{path}: dropped {broken} half-written line(s) a crash left")
        atomic_write_bytes(path, ("\n".join(kept) + "\n" if kept else "").encode())

    def open_log(self) -> None:
        from torch.utils.tensorboard import SummaryWriter  # slow to import: only when training

        self.writer = SummaryWriter(str(self.out / "tb"))

    def close_log(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def log(self, record: dict[str, Any]) -> None:
        """One epoch's line in metrics.jsonl, and its numbers in TensorBoard."""
        with writing(self.out / "metrics.jsonl"), open(self.out / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, int | float) and key != "epoch":
                    self.writer.add_scalar(key.replace("_", "/", 1), value, record["epoch"])
            self.writer.flush()

    def write_final(self, final: dict[str, Any]) -> None:
        with writing(self.out / "metrics.json"):
            atomic_write_json(self.out / "metrics.json", final)
