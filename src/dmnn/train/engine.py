"""The training engine: one loop for static and dynamic models, exact resume, honest metrics.

Under ``torchrun`` the same loop runs on every rank with DistributedDataParallel: each rank reads
its shard of every epoch, the routing statistics are those of the global batch, evaluation is
sharded and gathered, and rank 0 alone writes files (see docs/distributed.md).
"""

from __future__ import annotations

import json
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from ..checks import check_output
from ..data import DataBundle
from ..data.loaders import epoch_seed
from ..distributed.group import setup
from ..distributed.sync_bn import convert_sync_batchnorm
from ..errors import TrainingError, TrainingInterrupted, UsageError
from ..evaluation.metrics import collect, summarize_record
from ..execution.forcing import force_gates
from ..network.dynamic_net import DynamicNet
from ..network.gate import gates_of, set_gate_noise
from ..network.gumbel import noise_schedule
from ..network.memory import check_fits, inference_bytes, training_bytes
from ..registry import create_model
from .calibration import calibrate
from .checkpoint import (
    atomic_write_bytes,
    atomic_write_json,
    load_weights,
    read_checkpoint,
    read_meta,
    recoverable,
    remove_checkpoint,
    repair,
    restore_training,
    save_checkpoint,
    tidy,
    warm_start,
    writing,
)
from .config import TrainConfig, resolve_config
from .data import load_run_data, say
from .device import pick_device
from .precision import Precision
from .schedule import lr_factor


def model_kwargs(cfg: TrainConfig, data: DataBundle) -> dict[str, Any]:
    """Keyword arguments for ``create_model``: the data decides classes and channels, the
    method its own options."""
    kwargs: dict[str, Any] = {"num_classes": data.num_classes, "in_chans": data.in_chans}
    kwargs.update(cfg.method.model_kwargs(cfg, data))
    if cfg.width_mult is not None:
        kwargs["width_mult"] = cfg.width_mult
    return kwargs


@dataclass
class RunState:
    epoch: int = 0  # epochs completed
    step: int = 0
    best_top1: float = -1.0
    train_seconds: float = 0.0


class Sums:
    """Per-epoch sums of the training figures, kept as float64 tensors on the device and read
    back once an epoch (summed over the ranks under torchrun)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.values: dict[str, torch.Tensor] = {}

    def add(self, key: str, value: torch.Tensor | float, weight: int) -> None:
        v = torch.as_tensor(value, device=self.device).detach().double() * weight
        self.values[key] = self.values[key] + v if key in self.values else v

    def means(self, keys: list[str]) -> list[float]:
        seen = self.values["seen"]
        return torch.stack([self.values[k] / seen for k in keys]).tolist()

    def totals(self, dist: Any = None) -> dict[str, float]:
        keys = list(self.values)  # insertion order: the same on every rank
        values = torch.stack([self.values[k] for k in keys]).tolist()
        if dist is not None:
            values = dist.all_sum(values)
        return dict(zip(keys, values, strict=True))


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
        self.pending: dict[str, Any] | None = None  # an epoch trained but not yet evaluated
        self.writer = None

    # --- files ---------------------------------------------------------------------------------
    @property
    def last_path(self) -> Path:
        return self.out / "last.json"

    def has_checkpoint(self) -> bool:
        """Whether ``last`` can be resumed (also from a save a crash interrupted)."""
        return self.last_path.is_file() or recoverable(self.last_path)

    def check_out(self, resume: bool) -> None:
        """Fail before any work if the output folder does not fit ``resume`` (nothing written)."""
        check_output(self.out, "--out", folder=True)
        has_checkpoint = self.has_checkpoint()
        started = (self.out / "metrics.jsonl").exists() or (self.out / "config.yaml").exists()
        if resume and not has_checkpoint and not started:
            raise TrainingError(f"--resume: no checkpoint {self.last_path} to resume from")
        if resume and self.last_path.is_file():
            trained = read_meta(self.last_path)["extra"]["state"]["epoch"]
            if trained > self.cfg.epochs:
                raise UsageError(
                    f"--epochs {self.cfg.epochs} is fewer than the {trained} epochs {self.out} "
                    f"has trained: pass --epochs {trained} or more")
        if not resume and (has_checkpoint or (self.out / "metrics.jsonl").exists()):
            then = ("continue it" if has_checkpoint
                    else "start it over (it has no checkpoint yet)")
            raise TrainingError(
                f"{self.out} already holds a run: pass --resume to {then}, or another --out"
            )

    def lockstep(self) -> AbstractContextManager[object]:
        """Code every rank runs together: global batch statistics, gathered evaluation."""
        return self.dist.activate() if self.dist is not None else nullcontext()

    def prepare_out(self, resume: bool) -> None:
        self.check_out(resume)
        if self.dist is not None:
            self.dist.barrier()  # every rank has checked before rank 0 writes
        if self.main:
            self._prepare_files(resume)
        if self.dist is not None:
            self.dist.barrier()  # rank 0 has repaired what a crash left: the others read it
            if not self.main and resume and self.has_checkpoint():
                self.load_last(repair=False)

    def _prepare_files(self, resume: bool) -> None:
        if resume and self.has_checkpoint():
            self.load_last()
        elif resume:
            say(f"{self.out} has no checkpoint yet (the run stopped during its first epoch): "
                "starting it over")
        with writing(self.out / "config.yaml"):
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.out / "config.yaml",
                               yaml.safe_dump(self.cfg.to_dict(), sort_keys=True).encode())
            self._truncate_metrics()
        if self.last_path.is_file():  # load_last verified (and repaired) it: only tidy
            tidy(self.out / "last", keep=read_meta(self.last_path)["tensors"])
        for name in ("best", "calibrated"):
            repair(self.out / name)
        remove_checkpoint(self.out / "interrupted")  # stale once the run goes on from last

    def _truncate_metrics(self) -> None:
        """Drop metrics lines of epochs past the checkpoint (they will be redone: also the epoch
        that is trained but not yet closed) and a half-written line a crash left."""
        path = self.out / "metrics.jsonl"
        if not path.exists():
            return
        done = self.state.epoch - (1 if self.pending is not None else 0)
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

    def log(self, record: dict[str, Any]) -> None:
        if not self.main:
            return
        with writing(self.out / "metrics.jsonl"), open(self.out / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if isinstance(value, int | float) and key != "epoch":
                    self.writer.add_scalar(key.replace("_", "/", 1), value, record["epoch"])
            self.writer.flush()

    # --- loop ----------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, float]:
        model, cfg = self.model, self.cfg
        model.train()
        self.data.train.set_epoch(epoch)
        if self.dist is not None:  # each rank its own gate noise, the same for any resume
            torch.manual_seed(epoch_seed(epoch_seed(cfg.seed, epoch), self.dist.rank))
        noise = noise_schedule(epoch, cfg.epochs, cfg.noise_anneal_from, cfg.noise_final,
                               cfg.gate_noise)
        set_gate_noise(model, noise)
        setup = cfg.method.epoch_setup(model, cfg, epoch)  # e.g. warm-up, frozen routers
        sums = Sums(self.device)  # on the device: no host copy per step on CUDA
        bar = tqdm(
            self.data.train, total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}",
            leave=False, dynamic_ncols=True,
            disable=(None if self.progress is None else not self.progress) or not self.main,
        )
        precision = self.precision
        every = 1 if self.device.type == "cpu" else 25  # steps between host reads on devices
        for i, batch in enumerate(bar):
            x = precision.inputs(batch.images.to(self.device, non_blocking=True))
            y = batch.labels.to(self.device, non_blocking=True)
            c = batch.categories.to(self.device, non_blocking=True)
            with self.lockstep():
                with setup.forward(), precision.autocast():
                    logits, routing = self.net(x, return_routing=True)
                logits = logits.float()  # the loss and its bookkeeping in fp32
                out = self.loss(logits, routing, y, c, step=self.state.step,
                                teacher=partial(self.teacher, x, setup))
            if i % every == 0 and not torch.isfinite(out.total):
                last = (f"the last good checkpoint is {self.last_path}" if self.has_checkpoint()
                        else "no epoch had finished, so there is no checkpoint")
                raise TrainingError(
                    f"loss became {out.total.item()} at epoch {epoch + 1}, "
                    f"step {self.state.step + 1}; {last}"
                )
            self.optimizer.zero_grad(set_to_none=True)
            precision.backward_step(out.total, self.optimizer)
            self.scheduler.step()
            self.state.step += 1
            n = y.shape[0]
            sums.add("seen", n, 1)
            sums.add("loss", out.total, n)
            sums.add("correct", (logits.argmax(1) == y).sum(), 1)
            sums.add("macs_ratio", routing.macs_fraction("network"), n)
            sums.add("dyn_ratio", routing.macs_fraction("dynamic"), n)
            for k, v in out.parts.items():
                sums.add(f"part.{k}", v, n)
            if not bar.disable and i % every == 0:
                mean = sums.means(["loss", "correct", "macs_ratio"])
                bar.set_postfix(loss=f"{mean[0]:.3f}", acc=f"{mean[1]:.3f}",
                                macs=f"{mean[2]:.3f}")
        totals = sums.totals(self.dist)  # the epoch's figures over every rank's rows
        seen = totals["seen"]
        result = {
            "gate_noise": noise,
            "train_loss": totals["loss"] / seen, "train_top1": totals["correct"] / seen,
            "train_macs_ratio": totals["macs_ratio"] / seen,
            "train_macs_ratio_dynamic": totals["dyn_ratio"] / seen,
        }
        result.update({f"train_loss_{k[5:]}": v / seen for k, v in totals.items()
                       if k.startswith("part.") and k != "part.total"})
        result.update(setup.record)
        return result

    def teacher(self, x: torch.Tensor, setup: Any) -> torch.Tensor:
        """The all-on network's logits for ``x`` (in-place distillation's teacher,
        :mod:`dmnn.methods.objective`): the gates forced on, their cost real."""
        with setup.forward(), force_gates(self.model, "on"), self.precision.autocast():
            return self.net(x).float()

    def evaluate(self) -> dict[str, Any]:
        if self.dist is not None:
            self.dist.broadcast_buffers(self.model)  # the running statistics rank 0 saves
        with self.lockstep():
            record = collect(self.model, self.data.test, self.device)
        return summarize_record(
            record, self.model, self.input_size, self.data.category_map.names
        )

    def run(self, resume: bool = False) -> dict[str, Any]:
        self.prepare_out(resume)
        if self.main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tb"))
        cfg = self.cfg
        metrics: dict[str, Any] = {}
        try:
            if self.pending is not None:  # resumed between an epoch's training and its test
                metrics = self.close_epoch()
            for epoch in range(self.state.epoch, cfg.epochs):
                start = time.perf_counter()
                train = self.train_epoch(epoch)
                self.state.train_seconds += time.perf_counter() - start
                self.state.epoch = epoch + 1
                self.pending = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"],
                                **train, "train_seconds": self.state.train_seconds}
                self.save("last")  # the epoch is safe before evaluation can fail (a bad image)
                metrics = self.close_epoch()
        except KeyboardInterrupt:
            raise TrainingInterrupted(self.interrupted()) from None
        finally:
            if self.writer is not None:
                self.writer.close()
        return self.finish(metrics)

    def close_epoch(self) -> dict[str, Any]:
        """Evaluate the epoch in ``pending``, log it, then commit best (first) and last."""
        assert self.pending is not None
        test = self.evaluate()
        record = dict(self.pending)
        record.update({f"test_{k}": v for k, v in test.items() if isinstance(v, int | float)})
        record["train_seconds"] = record.pop("train_seconds")  # last in the line, as before
        self.log(record)
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
            f"MACs ratio {test['macs_ratio']:.3f}  ({self.state.train_seconds:.0f}s)"
        )
        return test

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
            done = read_meta(self.last_path)["epoch"]  # what last holds, not what ran since
            then = f"`--resume` continues after epoch {done} ({self.last_path})"
        elif self.has_checkpoint():
            then = "`--resume` continues from the last saved epoch"
        return f"interrupted: {saved}; {then}"

    def finish(self, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        """Calibrate the gates (if configured), evaluate, write metrics.json.

        ``metrics`` is the last epoch's evaluation (None when a finished run is resumed). The
        calibrated weights go to ``calibrated.*``; ``last.*`` keeps the trained ones, so
        finishing again (``--resume`` on a finished run) calibrates from the same start.
        """
        cfg = self.cfg
        metric = cfg.method.calibration_metric(cfg) if cfg.calibrate_gates else None
        calibration: dict[str, Any] | None = None
        if metric is not None:
            uncalibrated = metrics or self.evaluate()
            train_images = self.data.plain_train_subset(
                cfg.calibration_samples, cfg.eval_batch_size, cfg.seed)
            chosen_on = self.data.holdout if self.data.holdout is not None else train_images
            if self.dist is not None:
                for loader in {id(x): x for x in (train_images, chosen_on)}.values():
                    loader.shard(self.dist.rank, self.dist.world_size, pad=False)
            try:
                with self.lockstep():
                    result = calibrate(
                        self.model, chosen_on, cfg.target_rate, input_size=self.input_size,
                        bn_batches=train_images, metric=metric, device=self.device,
                        slack=cfg.calibration_slack, max_cost=cfg.calibration_max_cost,
                        images="held-out" if self.data.holdout is not None else "training",
                        progress=self.progress if self.main else False,
                    )
            except KeyboardInterrupt:
                raise TrainingInterrupted(
                    f"interrupted during gate calibration: the trained weights are in "
                    f"{self.last_path}; `--resume` finishes the calibration") from None
            metrics = self.evaluate()
            self.save("calibrated", metrics)
            calibration = {
                **result.to_dict(),
                "uncalibrated": {k: uncalibrated[k] for k in
                                 ("top1", "macs_mean", "macs_std", "macs_ratio")},
            }
            if self.main:
                tqdm.write(
                    f"{result.summary()}; test top1 {metrics['top1']:.4f}, MACs ratio "
                    f"{metrics['macs_ratio']:.3f} (uncalibrated {uncalibrated['top1']:.4f}, "
                    f"{uncalibrated['macs_ratio']:.3f})"
                )
        elif not metrics:  # resumed a finished run: report its last evaluation
            metrics = self.evaluate()
        final = {
            "model": cfg.model, "dataset": cfg.dataset, "target_rate": cfg.target_rate,
            "epochs": self.state.epoch, "train_seconds": self.state.train_seconds,
            "best_top1": self.state.best_top1, **metrics, "calibration": calibration,
        }
        if self.main:
            with writing(self.out / "metrics.json"):
                atomic_write_json(self.out / "metrics.json", final)
        return final


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
