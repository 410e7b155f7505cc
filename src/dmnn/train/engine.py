"""The training engine: one loop for static and dynamic models, exact resume, honest metrics.

Read top to bottom: :class:`Trainer` builds the run (data, model, DDP, optimizer, the method's
loss, schedule), then :meth:`Trainer.run` trains each remaining epoch (:mod:`.loop`), saves it,
evaluates it and logs it, and finishes with gate calibration and metrics.json (:mod:`.finish`).
The run folder, its checks and the repair of what a crash left are :mod:`.run_folder`'s; the
checkpoint format is :mod:`.checkpoint`'s.

Under ``torchrun`` the same loop runs on every rank with DistributedDataParallel: each rank reads
its shard of every epoch, the routing statistics are those of the global batch, evaluation is
sharded and gathered, and rank 0 alone writes files (see docs/distributed.md).
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data import DataBundle
from ..distributed.group import setup
from ..distributed.sync_bn import convert_sync_batchnorm
from ..errors import TrainingError, TrainingInterrupted, UsageError
from ..evaluation.metrics import collect, summarize_record
from ..files import atomic_write_json, writing
from ..network.dynamic_net import DynamicNet
from ..network.gate import gates_of
from ..network.latency_table import LatencyTable
from ..network.memory import check_fits, inference_bytes, training_bytes
from ..registry import create_model
from .budget import budget_of, resolve_latency, run_table_path
from .checkpoint import (
    load_weights,
    read_checkpoint,
    remove_checkpoint,
    restore_training,
    save_checkpoint,
    warm_start,
)
from .config import TrainConfig, resolve_config
from .data import load_run_data, say
from .device import pick_device
from .finish import (
    calibration_record,
    final_metrics,
    latency_note,
    run_calibration,
    say_calibrated,
)
from .loop import Parts, RunState, train_one_epoch
from .precision import Precision
from .run_folder import RunFolder
from .schedule import lr_factor


def model_kwargs(cfg: TrainConfig, data: DataBundle) -> dict[str, Any]:
    """Keyword arguments for ``create_model``: the data decides classes and channels, the
    method its own options."""
    kwargs: dict[str, Any] = {"num_classes": data.num_classes, "in_chans": data.in_chans}
    kwargs.update(cfg.method.model_kwargs(cfg, data))
    if cfg.width_mult is not None:
        kwargs["width_mult"] = cfg.width_mult
    return kwargs


def param_groups(model: torch.nn.Module, gate_decay: float | None) -> list[dict[str, Any]]:
    """One SGD group (the optimizer's weight decay for all), or with ``gate_decay`` set two:
    the network's weights, then the gates' own parameters with that decay."""
    params = list(model.parameters())
    if gate_decay is None:
        return [{"params": params}]
    gate_ids = {id(p) for gate in gates_of(model) for p in gate.parameters()}
    return [{"params": [p for p in params if id(p) not in gate_ids]},
            {"params": [p for p in params if id(p) in gate_ids], "weight_decay": gate_decay}]


class Trainer:
    """Trains ``cfg`` into ``out``: config.yaml, metrics.jsonl, metrics.json, tb/, checkpoints."""

    def __init__(self, cfg: TrainConfig, out: str | Path, *, progress: bool | None = None) -> None:
        self.cfg, self.out = cfg, Path(out)
        self.folder = RunFolder(self.out)
        self.progress = progress
        self.dist, self.device = setup(pick_device(cfg.device), cfg.dist_backend,
                                       cfg.dist_timeout)
        self.main = self.dist is None or self.dist.is_main  # the rank that writes files
        if cfg.sync_bn and self.dist is None:
            raise UsageError("--sync-bn needs a process group: launch with torchrun "
                             "--nproc-per-node K (K > 1), or drop --sync-bn")
        self.precision = Precision(cfg.amp, self.device, cfg.channels_last)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(cfg.seed)
        self.data = load_run_data(cfg, self.device)
        if self.dist is not None:
            world = self.dist.world_size
            if self.data.test.num_samples < world:
                raise UsageError(f"the test split has {self.data.test.num_samples} images, "
                                 f"fewer than the {world} processes: launch fewer")
            self.data.train.shard(self.dist.rank, world, pad=True)
            self.data.test.shard(self.dist.rank, world, pad=False)
        self.model_kwargs = model_kwargs(self.cfg, self.data)
        model = create_model(cfg.model, **self.model_kwargs)
        if cfg.init_from:  # a resume loads its own weights over these
            copied = warm_start(model, cfg.init_from)
            if self.main:
                say(f"warm start: {copied} tensors from {cfg.init_from}")
        if cfg.sync_bn:
            model = convert_sync_batchnorm(model, self.device)
        self.model: DynamicNet = self.precision.model(model.to(self.device))
        self.net: torch.nn.Module = self.model  # what a training step calls (DDP's wrapper)
        if self.dist is not None:
            from torch.nn.parallel import DistributedDataParallel

            self.net = DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg.method.unused_parameters(cfg))
        self.input_size = self.data.input_size
        self.model.macs_table(self.input_size)  # fail early on an input the model cannot take
        if self.device.type == "cpu":
            size = (self.input_size, self.input_size)
            batch = cfg.batch_size * cfg.method.train_copies(cfg)
            check_fits(training_bytes(self.model, size, batch),
                       f"training {cfg.model} at {self.input_size} px, batch {cfg.batch_size}",
                       "lower --batch-size (or --image-size)")
            check_fits(inference_bytes(self.model, size, cfg.eval_batch_size),
                       f"evaluating at batch {cfg.eval_batch_size}", "lower --eval-batch-size")
        self.optimizer = torch.optim.SGD(
            param_groups(self.model, cfg.gate_weight_decay), lr=cfg.lr, momentum=cfg.momentum,
            nesterov=cfg.nesterov, weight_decay=cfg.weight_decay,
        )
        self.steps_per_epoch = len(self.data.train)
        if self.steps_per_epoch == 0:
            raise UsageError("the training split is smaller than one batch: lower --batch-size")
        self.loss = cfg.method.loss(cfg, self.steps_per_epoch)  # the whole objective
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_factor(cfg, self.steps_per_epoch)
        )
        self.state = RunState()
        self.latency: LatencyTable | None = None  # the run's latency table (check)
        self.budget_ready = False
        self.pending: dict[str, Any] | None = None  # an epoch trained but not yet evaluated

    def parts(self) -> Parts:
        """What an epoch trains with (read each epoch: a test may swap the loss)."""
        return Parts(self.cfg, self.model, self.net, self.loss, self.optimizer, self.scheduler,
                     self.precision, self.device, self.dist, self.lockstep)

    # --- the run -------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> dict[str, Any]:
        """Train the remaining epochs (each saved, then evaluated), then finish the run."""
        self.prepare_out(resume)
        if self.main:
            self.folder.open_log()
        metrics: dict[str, Any] = {}
        try:
            if self.pending is not None:  # resumed between an epoch's training and its test
                metrics = self.close_epoch()
            for epoch in range(self.state.epoch, self.cfg.epochs):
                start = time.perf_counter()
                train = train_one_epoch(
                    self.parts(), self.data.train, epoch, self.state, steps=self.steps_per_epoch,
                    disable_bar=(None if self.progress is None else not self.progress)
                    or not self.main, last_good=self.last_good())
                self.state.train_seconds += time.perf_counter() - start
                self.state.epoch = epoch + 1
                self.pending = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
                                **train, "train_seconds": self.state.train_seconds}
                self.save("last")  # the epoch is safe before evaluation can fail (a bad image)
                metrics = self.close_epoch()
        except KeyboardInterrupt:
            raise TrainingInterrupted(self.interrupted()) from None
        finally:
            self.folder.close_log()
        return self.finish(metrics)

    def close_epoch(self) -> dict[str, Any]:
        """Evaluate the epoch in ``pending``, log it, then commit best (first) and last."""
        assert self.pending is not None
        test = self.evaluate()
        record = dict(self.pending)
        record.update({f"test_{k}": v for k, v in test.items() if isinstance(v, int | float)})
        record["train_seconds"] = record.pop("train_seconds")  # last in the line, as before
        if self.main:
            self.folder.log(record)
        self.pending = None
        if test["top1"] > self.state.best_top1:
            self.state.best_top1 = test["top1"]
            self.save("best", test)  # before last: last's best_top1 never runs ahead of best.*
        self.save("last", test)
        if not self.main:
            return test
        remove_checkpoint(self.out / "interrupted")
        tqdm.write(
            f"epoch {record['epoch']}/{self.cfg.epochs}  loss {record['train_loss']:.4f}  "
            f"train {record['train_top1']:.4f}  test top1 {test['top1']:.4f}  "
            f"MACs ratio {test['macs_ratio']:.3f}{latency_note(test)}  "
            f"({self.state.train_seconds:.0f}s)"
        )
        return test

    def evaluate(self) -> dict[str, Any]:
        if self.dist is not None:
            self.dist.broadcast_buffers(self.model)  # the running statistics rank 0 saves
        with self.lockstep():
            record = collect(self.model, self.data.test, self.device)
        return summarize_record(
            record, self.model, self.input_size, self.data.category_map.names, self.latency
        )

    def finish(self, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        """Calibrate the gates (if configured), evaluate, write metrics.json (:mod:`.finish`).
        ``metrics`` is the last epoch's evaluation (None when a finished run is resumed)."""
        cfg = self.cfg
        metric = cfg.method.calibration_metric(cfg) if cfg.calibrate_gates else None
        if metric is not None and cfg.loss.budget == "latency":
            metric = "latency_ratio"  # calibration holds what the loss held
        calibration: dict[str, Any] | None = None
        if metric is not None:
            uncalibrated = metrics or self.evaluate()
            result = run_calibration(
                self.model, self.data, cfg, metric, input_size=self.input_size,
                device=self.device, dist=self.dist, lockstep=self.lockstep,
                progress=self.progress if self.main else False, last_path=self.last_path,
                latency=self.latency)
            metrics = self.evaluate()
            self.save("calibrated", metrics)
            calibration = calibration_record(result, uncalibrated)
            if self.main:
                say_calibrated(result, metrics, uncalibrated)
        elif not metrics:  # resumed a finished run: report its last evaluation
            metrics = self.evaluate()
        final = final_metrics(cfg, self.state, metrics, calibration)
        if self.main:
            self.folder.write_final(final)
        return final

    # --- the run folder ------------------------------------------------------------------------
    @property
    def last_path(self) -> Path:
        return self.folder.last_path

    def has_checkpoint(self) -> bool:
        return self.folder.has_checkpoint()

    def last_good(self) -> str:
        return (f"the last good checkpoint is {self.last_path}" if self.has_checkpoint()
                else "no epoch had finished, so there is no checkpoint")

    def lockstep(self) -> AbstractContextManager[object]:
        """Code every rank runs together: global batch statistics, gathered evaluation."""
        return self.dist.activate() if self.dist is not None else nullcontext()

    def check(self, resume: bool) -> None:
        """Everything a run checks before it writes: the folder, and the latency table (read,
        or profiled, once) against the run."""
        self.folder.check(resume, self.cfg.epochs)
        if self.budget_ready:
            return
        self.latency = resolve_latency(
            self.cfg, self.model, self.model_kwargs, self.input_size, self.out, resume=resume,
            device=self.device, distributed=self.dist is not None,
            say=say if self.main else (lambda _: None))
        self.loss.budget = budget_of(self.cfg, self.latency)
        self.budget_ready = True

    def prepare_out(self, resume: bool) -> None:
        """Check the folder (every rank), load ``last`` and repair the folder (rank 0), then let
        the other ranks load the repaired ``last``."""
        self.check(resume)
        if self.dist is not None:
            self.dist.barrier()  # every rank has checked before rank 0 writes
        if self.main:
            if resume and self.has_checkpoint():
                self.load_last()
            elif resume:
                say(f"{self.out} has no checkpoint yet (the run stopped during its first "
                    "epoch): starting it over")
            # the epoch trained but not yet closed is redone: drop its metrics line too
            done = self.state.epoch - (1 if self.pending is not None else 0)
            self.folder.prepare(self.cfg.to_dict(), done)
            if self.latency is not None:
                atomic_write_json(run_table_path(self.out), self.latency.data)
        if self.dist is not None:
            self.dist.barrier()  # rank 0 has repaired what a crash left: the others read it
            if not self.main and resume and self.has_checkpoint():
                self.load_last(repair=False)

    def load_last(self, repair: bool = True) -> None:
        meta, tensors = read_checkpoint(self.last_path, repair=repair)
        defaults = type(self.cfg.options)().to_dict()  # an older run recorded fewer options
        if meta["model"] != self.cfg.model or (
                {**defaults, **meta["model_kwargs"]} != {**defaults, **self.model_kwargs}):
            raise TrainingError(
                f"{self.last_path} was trained as {meta['model']} {meta['model_kwargs']}, "
                f"not {self.cfg.model} {self.model_kwargs}"
            )
        load_weights(self.model, tensors, str(self.last_path))
        restore_training(meta, tensors, self.optimizer, self.scheduler)
        self.state = RunState(**meta["extra"]["state"])
        self.pending = meta["extra"].get("pending")
        if meta["extra"].get("loss_state"):
            self.loss.load_state_dict(meta["extra"]["loss_state"])
        self.precision.load_state_dict(meta["extra"].get("scaler") or {})
        saved = meta["extra"].get("steps_per_epoch", self.steps_per_epoch)
        if saved != self.steps_per_epoch:  # another number of processes: same epoch, new steps
            self.state.step = self.state.epoch * self.steps_per_epoch
            self.scheduler.last_epoch = self.state.step
            factor = lr_factor(self.cfg, self.steps_per_epoch)(self.state.step)
            for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs,
                                   strict=True):
                group["lr"] = base * factor
            self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]  # noqa: SLF001

    def save(self, name: str, metrics: dict[str, Any] | None = None) -> Path:
        if not self.main:
            return self.out / f"{name}.json"
        with writing(self.out / f"{name}.json"):
            return save_checkpoint(
                self.out / name, self.model, model_name=self.cfg.model,
                model_kwargs=self.model_kwargs, optimizer=self.optimizer,
                scheduler=self.scheduler, epoch=self.state.epoch,
                extra={
                    "state": vars(self.state).copy(), "config": self.cfg.to_dict(),
                    "data": self.data.spec.to_dict(), "input_size": self.input_size,
                    "loss_state": self.loss.state_dict(),
                    "metrics": metrics or {}, "pending": self.pending,
                    "steps_per_epoch": self.steps_per_epoch, "scaler": self.precision.state_dict(),
                    "world_size": 1 if self.dist is None else self.dist.world_size,
                },
            )

    def interrupted(self) -> str:
        """Ctrl-C: save the weights as they are, say what was saved and how to go on."""
        if not self.main:
            return "interrupted: rank 0 saves the weights"
        try:
            path = self.save("interrupted")
        except KeyboardInterrupt:
            path = None
        saved = (f"weights saved to {path}" if path
                 else "a second Ctrl-C stopped saving the weights (interrupted again)")
        then = "no epoch had finished, so `--resume` starts the run over"
        if self.last_path.is_file():
            done = self.folder.last_epoch()
            then = f"`--resume` continues after epoch {done} ({self.last_path})"
        elif self.has_checkpoint():
            then = "`--resume` continues from the last saved epoch"
        return f"interrupted: {saved}; {then}"


def train(
    cfg: TrainConfig, out: str | Path, *, resume: bool = False, progress: bool | None = None
) -> dict[str, Any]:
    """Train ``cfg`` into ``out`` (see :class:`Trainer`)."""
    return Trainer(cfg, out, progress=progress).run(resume=resume)


def resume_config(out: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The saved config of a run, with ``overrides`` (e.g. more epochs) applied."""
    path = Path(out) / "config.yaml"
    if not path.is_file():
        raise TrainingError(f"--resume: {path} not found: is {out} a dmnn training folder?")
    return resolve_config(None, path, overrides, saved=True)
