"""One training epoch: the forward with routing, the method's loss, the step, the figures.

The loop knows no method: the model's method supplies the loss (the whole objective) and the
epoch's setup (warm-up, frozen routers); the loop sums what they report. Under torchrun each
rank runs it on its shard, with batch statistics over the global batch (``lockstep``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data.loaders import epoch_seed
from ..errors import TrainingError
from ..execution.forcing import force_gates
from ..network.dynamic_net import DynamicNet
from ..network.gate import set_gate_noise
from ..network.gumbel import noise_schedule
from .config import TrainConfig
from .precision import Precision


@dataclass
class RunState:
    """Where the run stands (saved in every checkpoint)."""

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


@dataclass
class Parts:
    """What an epoch trains with (built once by the :class:`~dmnn.train.engine.Trainer`)."""

    cfg: TrainConfig
    model: DynamicNet  # the network itself
    net: torch.nn.Module  # what a step calls: the model, or DDP's wrapper of it
    loss: Any  # the method's Loss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    precision: Precision
    device: torch.device
    dist: Any  # the DistContext under torchrun, else None
    lockstep: Callable[[], AbstractContextManager[object]]


def teacher_logits(parts: Parts, x: torch.Tensor, setup: Any) -> torch.Tensor:
    """The all-on network's logits for ``x`` (in-place distillation's teacher,
    :mod:`dmnn.methods.objective`): the gates forced on, their cost real."""
    with setup.forward(), force_gates(parts.model, "on"), parts.precision.autocast():
        return parts.net(x).float()


def train_one_epoch(
    parts: Parts, loader: Any, epoch: int, state: RunState, *, steps: int,
    disable_bar: bool | None, last_good: str,
) -> dict[str, float]:
    """Train one epoch over ``loader`` (advancing ``state.step``); returns its figures.
    ``last_good`` says where the last good checkpoint is, for a loss that turns non-finite;
    ``disable_bar`` is tqdm's ``disable`` (None: no bar unless on a terminal)."""
    p, cfg = parts, parts.cfg
    p.model.train()
    loader.set_epoch(epoch)
    if p.dist is not None:  # each rank its own gate noise, the same for any resume
        torch.manual_seed(epoch_seed(epoch_seed(cfg.seed, epoch), p.dist.rank))
    noise = noise_schedule(epoch, cfg.epochs, cfg.noise_anneal_from, cfg.noise_final,
                           cfg.gate_noise)
    set_gate_noise(p.model, noise)
    setup = cfg.method.epoch_setup(p.model, cfg, epoch)  # e.g. warm-up, frozen routers
    sums = Sums(p.device)  # on the device: no host copy per step on CUDA
    bar = tqdm(loader, total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
               dynamic_ncols=True, disable=disable_bar)
    every = 1 if p.device.type == "cpu" else 25  # steps between host reads on devices
    for i, batch in enumerate(bar):
        x = p.precision.inputs(batch.images.to(p.device, non_blocking=True))
        y = batch.labels.to(p.device, non_blocking=True)
        c = batch.categories.to(p.device, non_blocking=True)
        with p.lockstep():
            with setup.forward(), p.precision.autocast():
                logits, routing = p.net(x, return_routing=True)
            logits = logits.float()  # the loss and its bookkeeping in fp32
            out = p.loss(logits, routing, y, c, step=state.step,
                         teacher=partial(teacher_logits, p, x, setup))
        if i % every == 0 and not torch.isfinite(out.total):
            raise TrainingError(f"loss became {out.total.item()} at epoch {epoch + 1}, "
                                f"step {state.step + 1}; {last_good}")
        p.optimizer.zero_grad(set_to_none=True)
        p.precision.backward_step(out.total, p.optimizer)
        p.scheduler.step()
        state.step += 1
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
            bar.set_postfix(loss=f"{mean[0]:.3f}", acc=f"{mean[1]:.3f}", macs=f"{mean[2]:.3f}")
    totals = sums.totals(p.dist)  # the epoch's figures over every rank's rows
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
