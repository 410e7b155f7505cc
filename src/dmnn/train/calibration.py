"""Gate (threshold) calibration after training: put the *eval-mode* compute on the target.

What ``dmnn train --calibrate`` runs (not to be confused with path autotuning,
:mod:`dmnn.execution.autotune`, which times gather/scatter against masked dense).

Why: the resource loss holds the training-mode ratio at r. In training, gates are sampled with
Gumbel noise, BatchNorm uses batch statistics, and the images are augmented. At test time the gate
is an argmax, BN uses running statistics, and the images are clean. On CIFAR-10 the two ratios
differ: DMNN-20 at r = 0.5 trained at 0.499 and tested at 0.469.

Adding one scalar δ to every gate's on-logit moves every decision threshold from p_on > 0.5 to
p_on > sigmoid(−δ). The eval-mode ratio rises with δ; it is monotone up to the knock-on effect of
one block's choice on the next block's input. Bisection finds the δ that meets the target on
*training* images served like the test split (no augmentation, eval mode), so the test split is
never looked at. δ is folded into the gate biases, so the calibrated weights are an ordinary
checkpoint, and the sparse executor and the MACs table need nothing new.

A run already within ``slack`` of the target keeps its trained thresholds. Why: a gate that has
settled on one path for every image has on-logit margins far beyond any small δ, so closing a gap
of a fraction of a percent means flipping whole groups of images at once, and those flips cost
accuracy out of all proportion to the compute they save (DMNN-20, r = 0.5, full CIFAR-10: a ratio
of 0.506 took δ = −8 to reach 0.502 and lost 2.9 points of test top-1, 2.8 on the calibration
images; results/frontier/README.md).

Otherwise :func:`calibrate` measures candidates and keeps the cheapest that reaches the target
(#32), each started from the trained weights:

* ``offset``: the one global δ above;
* ``offset+bn``: δ, then BatchNorm statistics re-estimated on training images under the
  calibrated gates (each path's BN saw the images routed through it in training; after a shift it
  sees others, as a slimmable network's BN sees other statistics at each width), then δ again;
* ``per-block``: one offset per gate, chosen greedily: each step shifts the gate whose shift
  moves the ratio toward r for the least rise of the cross-entropy loss;
* ``per-block+bn``: the per-block offsets, then the BN re-estimation, then per-block again;
* ``per-block+ft``: the per-block offsets, then DRNet §3.4's remedy: a short fine-tune of the
  network's weights (not the gates) on training images with the gates deciding hard and
  noise-free as at test time (:func:`finetune_hard`), then the BN re-estimation and per-block
  again. It trains, so it is tried only with ``--holdout`` (judged on images it never saw).

A candidate's cost is the top-1 it loses against the trained gates on the calibration images
(held-out training images with ``--holdout``, else training images; never the test split). When
no candidate reaches r within ``max_cost``, the trained gates stay and the report says so, with
what each candidate would have cost. Tables compare every run at its measured MACs, so a run left
off its target is reported as it is, never hidden.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..checks import check_choice, check_number
from ..errors import UsageError
from ..evaluation.metrics import collect, summarize_record
from ..execution.fused import drop_fused
from ..network.dynamic_net import DynamicNet
from ..network.gate import Gate
from ..network.latency_table import LatencyTable

METRICS = ("macs_ratio", "macs_ratio_dynamic", "exec_rate", "latency_ratio")


@dataclass(frozen=True)
class Calibration:
    """What calibration did. ``before``/``after`` are the metric on the calibration images."""

    metric: str
    target: float
    offset: float
    before: float
    after: float
    samples: int
    steps: int
    reached: bool
    slack: float = 0.0

    def to_dict(self) -> dict[str, float | int | str | bool]:
        return asdict(self)


def shiftable_gates(model: DynamicNet) -> list[Gate]:
    """The gates of ``model``; a ValueError names the first gate with no threshold to shift."""
    gates = [b.gate for b in model.gated_blocks]
    if not gates:
        raise UsageError("the model has no gates to calibrate (a static model)")
    for gate in gates:
        if not gate.calibratable:
            raise UsageError(
                f"{type(gate).__name__} has no decision threshold to shift: gate calibration "
                "needs gates with calibratable = True (DMNN, ConvNet-AIG, DRNet, LC-Net)"
            )
    return gates


def check_metric(metric: str, latency: LatencyTable | None) -> None:
    check_choice("metric", metric, METRICS)
    if metric == "latency_ratio" and latency is None:
        raise UsageError("calibrating the latency ratio needs the run's latency table")


def can_calibrate(model: DynamicNet) -> bool:
    try:
        shiftable_gates(model)
    except ValueError:
        return False
    return True


def measure(
    model: DynamicNet, batches: Iterable, input_size: int, metric: str, device: torch.device,
    latency: LatencyTable | None = None,
) -> tuple[float, int]:
    """``metric`` of ``model`` in eval mode over ``batches`` and the number of samples: the
    evaluator's own definition (:func:`dmnn.evaluation.metrics.summarize_record`;
    ``latency_ratio`` needs the ``latency`` table)."""
    summary = summarize_record(collect(model, batches, device), model, input_size,
                               latency=latency)
    if metric == "exec_rate":
        rates = list(summary["exec_rate_block"].values())
        return sum(rates) / len(rates), summary["samples"]
    return summary[metric], summary["samples"]


@torch.no_grad()
def calibrate_gates(
    model: DynamicNet,
    batches: Iterable,
    target: float,
    *,
    input_size: int,
    metric: str = "macs_ratio",
    device: torch.device | str = "cpu",
    tol: float = 0.002,
    slack: float = 0.0,
    bound: float = 8.0,
    max_steps: int = 24,
    progress: bool | None = None,
    latency: LatencyTable | None = None,
) -> Calibration:
    """Shift every gate's on-logit by the δ in [−bound, bound] that brings ``metric`` on
    ``batches`` within ``tol`` of ``target`` (the closest one found if none does); no shift at
    all when the trained gates are already within ``max(tol, slack)`` of it."""
    check_metric(metric, latency)
    check_number("calibration target", target, 0.0, 1.0)
    check_number("calibration slack", slack, 0.0, 1.0)
    gates = shiftable_gates(model)
    device = torch.device(device)
    applied = 0.0
    bar = tqdm(total=max_steps, desc="calibrating gates", leave=False,
               disable=None if progress is None else not progress)

    def at(delta: float) -> tuple[float, int]:
        nonlocal applied
        for gate in gates:
            gate.shift_on_logit(delta - applied)
        applied = delta
        bar.update(1)
        value, n = measure(model, batches, input_size, metric, device, latency)
        bar.set_postfix(offset=f"{delta:+.3f}", value=f"{value:.4f}")
        return value, n

    try:
        before, samples = at(0.0)
        best, best_value, steps = 0.0, before, 1
        if abs(before - target) > max(tol, slack):
            # the value rises with δ: bracket the target between 0 and ±bound, then bisect
            lo, hi = (-bound, 0.0) if before > target else (0.0, bound)
            while steps < max_steps:
                mid = (lo + hi) / 2 if steps > 1 else (lo if before > target else hi)
                value, _ = at(mid)
                steps += 1
                if abs(value - target) < abs(best_value - target):
                    best, best_value = mid, value
                if abs(value - target) <= tol:
                    break
                if steps == 2 and (value > target) == (before > target):
                    break  # even ±bound does not reach the target: keep the closest end
                if value > target:
                    hi = mid
                else:
                    lo = mid
        if applied != best:
            for gate in gates:
                gate.shift_on_logit(best - applied)
            applied = best
    finally:
        bar.close()
    return Calibration(
        metric=metric, target=target, offset=best, before=before, after=best_value,
        samples=samples, steps=steps, reached=abs(best_value - target) <= max(tol, slack),
        slack=slack,
    )


# ------------------------------------------------------------------ candidates and the choice


CANDIDATES = ("offset", "offset+bn", "per-block", "per-block+bn", "per-block+ft")
"""What :func:`calibrate` tries, in this order (the first of equal cost wins: the simplest)."""

TRAINS = ("per-block+ft",)
"""Candidates that train weights on the BN images: judged only on held-out images (a candidate
that trains on the images it is judged on would look better than it is)."""


@dataclass(frozen=True)
class Candidate:
    """One way of meeting the target, measured on the calibration images."""

    name: str
    value: float  # the calibration metric
    top1: float
    loss: float
    cost: float  # top-1 lost against the trained gates (a fraction: 0.003 = 0.3 points)
    reached: bool
    offsets: tuple[float, ...]  # per gate, folded into its on-logit
    bn: bool  # BatchNorm statistics re-estimated

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["offsets"] = [round(o, 4) for o in self.offsets]
        return out


@dataclass(frozen=True)
class Outcome:
    """What :func:`calibrate` kept and why; ``trained`` are the trained gates' figures."""

    metric: str
    target: float
    chosen: str  # a candidate's name, or "trained"
    reason: str
    trained: Candidate
    candidates: tuple[Candidate, ...]
    max_cost: float
    samples: int
    images: str  # "held-out" or "training"
    skipped: tuple[str, ...] = ()  # candidates not tried, each with why

    @property
    def kept(self) -> Candidate:
        return next((c for c in self.candidates if c.name == self.chosen), self.trained)

    def summary(self) -> str:
        """One line for the log."""
        k = self.kept
        if self.chosen == "trained":
            tried = ", ".join(f"{c.name} {c.value:.3f} at {100 * c.cost:+.2f}"
                              for c in self.candidates)
            return (f"gate calibration kept the trained gates: {self.metric} "
                    f"{self.trained.value:.3f} against target {self.target:.3f} ({self.reason})"
                    + (f"; cost in top-1 points on {self.samples} {self.images} images: {tried}"
                       if tried else ""))
        return (f"gate calibration: {self.chosen}, {self.metric} on {self.samples} {self.images} "
                f"images {self.trained.value:.3f} -> {k.value:.3f}, top-1 "
                f"{100 * self.trained.top1:.2f} -> {100 * k.top1:.2f} %")

    def to_dict(self) -> dict[str, Any]:
        k = self.kept
        return {
            "metric": self.metric, "target": self.target, "chosen": self.chosen,
            "kept_trained": self.chosen == "trained", "reason": self.reason,
            "max_cost": self.max_cost, "samples": self.samples, "images": self.images,
            # the earlier report's keys: the global offset, the metric before and after
            "offset": k.offsets[0] if k.offsets and len(set(k.offsets)) == 1 else 0.0,
            "before": self.trained.value, "after": k.value, "reached": k.reached,
            "trained": self.trained.to_dict(),
            "candidates": {c.name: c.to_dict() for c in self.candidates},
            "skipped": list(self.skipped),
        }


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's state (weights, BN statistics) to come back to."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.track_running_stats]


@torch.no_grad()
def reestimate_bn(model: DynamicNet, batches: Iterable, device: torch.device | str) -> int:
    """Recompute every BatchNorm's running statistics over ``batches`` (training images, served
    plainly) with the gates deciding as at test time: each BN averages the images that now
    reach it. Under torchrun the ranks' statistics are averaged. Returns the images seen."""
    device = torch.device(device)
    bns = batchnorms(model)
    model.eval()
    # the eval executors fold BN into the convs (it would never see an image) and autotuned
    # dense thresholds run some sub-blocks on off images too: the sparse executor runs each
    # BN as a module on exactly the images its gate lets through
    modes = [model.execution, [(b.execution, b.dense_above) for b in model.blocks]]
    model.set_execution("sparse")
    for block in model.blocks:
        block.dense_above = None
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches
        m.train()
    seen = 0
    try:
        for batch in batches:
            if batch.images.shape[0] < 2:  # a BN over one image has no variance
                continue
            model(batch.images.to(device, non_blocking=True))
            seen += batch.images.shape[0]
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
            m.eval()
        model.execution = modes[0]
        for block, (mode, above) in zip(model.blocks, modes[1], strict=True):
            block.execution, block.dense_above = mode, above
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        world = dist.get_world_size()
        for m in bns:
            for t in (m.running_mean, m.running_var):
                dist.all_reduce(t)
                t.div_(world)
    drop_fused(model)
    return seen


def finetune_hard(model: DynamicNet, batches: Iterable, device: torch.device | str, *,
                  lr: float = 0.01, passes: int = 1) -> int:
    """DRNet §3.4: fine-tune the network's weights with the gates deciding as at test time.

    The model stays in eval mode with autograd on: every gate is an argmax without noise (the
    calibrated thresholds), off sub-blocks are skipped (the sparse executor, unfolded: folded
    weights have no gradient), BatchNorm uses its running statistics, and the gates' own
    parameters are not updated. SGD (momentum 0.9) on the cross-entropy, ``passes`` over
    ``batches``; under torchrun the gradients are averaged over the ranks. Returns the steps."""
    device = torch.device(device)
    frozen = {id(p) for g in shiftable_gates(model) for p in g.parameters()}
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in frozen]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    model.eval()
    steps = 0
    with torch.enable_grad():
        for _ in range(passes):
            for batch in batches:
                x = batch.images.to(device, non_blocking=True)
                y = batch.labels.to(device, non_blocking=True)
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if world > 1:
                    for p in params:
                        if p.grad is not None:
                            dist.all_reduce(p.grad)
                            p.grad.div_(world)
                opt.step()
                steps += 1
    drop_fused(model)
    return steps


def per_gate_shift(gates: list[Gate], offsets: list[float], new: list[float]) -> None:
    for gate, old, value in zip(gates, offsets, new, strict=True):
        if value != old:
            gate.shift_on_logit(value - old)
    offsets[:] = new


def greedy_offsets(
    gates: list[Gate], offsets: list[float], evaluate: Callable[[], dict[str, float]],
    target: float, *, tol: float, step: float, bound: float, max_evals: int,
) -> dict[str, float]:
    """Per-gate offsets, greedily: each round tries a step of every gate toward the target and
    keeps the one with the least loss per unit of the metric moved; a step past the target is
    halved until it lands within ``tol``. Starts from (and updates) ``offsets``; returns the
    final measurement."""
    now = evaluate()
    evals = 1
    while abs(now["value"] - target) > tol and evals < max_evals:
        sign = 1.0 if now["value"] < target else -1.0
        best: tuple[float, int, float, dict[str, float]] | None = None
        for i in range(len(gates)):
            if evals >= max_evals:
                break
            trial = list(offsets)
            trial[i] = max(-bound, min(bound, trial[i] + sign * step))
            if trial[i] == offsets[i]:
                continue
            before = list(offsets)
            per_gate_shift(gates, offsets, trial)
            got = evaluate()
            evals += 1
            per_gate_shift(gates, offsets, before)
            moved = sign * (got["value"] - now["value"])
            if moved <= 1e-9:
                continue
            score = (got["loss"] - now["loss"]) / moved
            if best is None or score < best[0]:
                best = (score, i, trial[i], got)
        if best is None:
            if step >= bound:
                break  # no gate moves the metric any more
            step = min(bound, 2 * step)
            continue
        _, i, value, got = best
        size = value - offsets[i]
        while sign * (got["value"] - target) > tol and evals < max_evals:  # past the target
            size /= 2
            trial = list(offsets)
            trial[i] += size
            before = list(offsets)
            per_gate_shift(gates, offsets, trial)
            got = evaluate()
            evals += 1
            per_gate_shift(gates, offsets, before)
        trial = list(offsets)
        trial[i] += size
        per_gate_shift(gates, offsets, trial)
        now = got
    return now


@torch.no_grad()
def calibrate(
    model: DynamicNet,
    batches: Iterable,
    target: float,
    *,
    input_size: int,
    bn_batches: Iterable | None = None,
    metric: str = "macs_ratio",
    device: torch.device | str = "cpu",
    tol: float = 0.002,
    slack: float = 0.0,
    max_cost: float = 0.003,
    candidates: tuple[str, ...] = CANDIDATES,
    bound: float = 8.0,
    max_evals: int = 48,
    images: str = "training",
    progress: bool | None = None,
    finetune_lr: float = 0.01,
    latency: LatencyTable | None = None,
) -> Outcome:
    """Meet ``target`` on ``batches`` with the candidate that costs the least top-1 there (see
    the module docstring), or keep the trained gates when none reaches it within ``max_cost``.
    ``bn_batches``: the training images BN statistics are re-estimated on (and ``per-block+ft``
    fine-tunes on; default ``batches``). The model ends with what was kept."""
    check_metric(metric, latency)
    check_number("calibration target", target, 0.0, 1.0)
    check_number("calibration slack", slack, 0.0, 1.0)
    check_number("calibration max cost", max_cost, 0.0, 1.0)
    for name in candidates:
        check_choice("calibration candidate", name, CANDIDATES)
    gates = shiftable_gates(model)
    device = torch.device(device)
    bn_batches = batches if bn_batches is None else bn_batches
    trained_state = snapshot(model)
    bar = tqdm(desc="calibrating gates", leave=False,
               disable=None if progress is None else not progress)
    samples = 0

    def evaluate() -> dict[str, float]:
        nonlocal samples
        summary = summarize_record(collect(model, batches, device), model, input_size,
                                   latency=latency)
        samples = summary["samples"]
        if metric == "exec_rate":  # the mean block execution rate (no summary key of its own)
            rates = list(summary["exec_rate_block"].values())
            value = sum(rates) / len(rates)
        else:
            value = summary[metric]
        bar.update(1)
        bar.set_postfix(value=f"{value:.4f}", top1=f"{summary['top1']:.4f}")
        return {"value": value, "top1": summary["top1"], "loss": summary["loss"]}

    def restore() -> None:
        model.load_state_dict(trained_state)
        drop_fused(model)

    def candidate(name: str, got: dict[str, float], offsets: list[float], bn: bool) -> Candidate:
        return Candidate(name, got["value"], got["top1"], got["loss"],
                         base.top1 - got["top1"], abs(got["value"] - target) <= max(tol, slack),
                         tuple(offsets), bn)

    def global_offset() -> float:
        """Bisect one δ for every gate (on top of the current weights)."""
        found = calibrate_gates(model, batches, target, input_size=input_size, metric=metric,
                                device=device, tol=tol, bound=bound, progress=False,
                                latency=latency)
        return found.offset

    tried: list[Candidate] = []
    skipped: list[str] = []
    kept: tuple[Candidate, dict[str, torch.Tensor]] | None = None  # the cheapest that reached
    try:
        got = evaluate()
        base = Candidate("trained", got["value"], got["top1"], got["loss"], 0.0,
                         abs(got["value"] - target) <= max(tol, slack), (0.0,) * len(gates),
                         False)
        if base.reached:
            reason = f"within {max(tol, slack):g} of the target"
        else:
            scale = 1.0
            for name in candidates:
                if name in TRAINS and images != "held-out":
                    skipped.append(f"{name}: it trains, so it needs images held out from "
                                   "training to be judged on (--holdout N)")
                    continue
                restore()
                offsets = [0.0] * len(gates)
                if name.startswith("offset"):
                    delta = global_offset()
                    offsets = [delta] * len(gates)
                    scale = max(0.25, abs(delta) / 2)
                    if name.endswith("+bn"):
                        reestimate_bn(model, bn_batches, device)
                        offsets = [delta + global_offset()] * len(gates)
                    got = evaluate()
                else:
                    got = greedy_offsets(gates, offsets, evaluate, target, tol=tol, step=scale,
                                         bound=bound, max_evals=max_evals)
                    if name.endswith(("+bn", "+ft")):
                        if name.endswith("+ft"):
                            finetune_hard(model, bn_batches, device, lr=finetune_lr)
                        reestimate_bn(model, bn_batches, device)
                        # a fine-tune moves the ratio further than a BN re-estimation
                        ft = name.endswith("+ft")
                        got = greedy_offsets(gates, offsets, evaluate, target, tol=tol,
                                             step=scale if ft else scale / 2, bound=bound,
                                             max_evals=2 * max_evals if ft else max_evals)
                tried.append(candidate(name, got, offsets, name.endswith(("+bn", "+ft"))))
                if tried[-1].reached and (kept is None or tried[-1].cost < kept[0].cost):
                    kept = (tried[-1], snapshot(model))  # one copy: the best so far only
            if kept is None:
                reason = "no candidate reached the target"
            elif kept[0].cost > max_cost:
                reason = (f"every candidate that reached it cost more than "
                          f"{100 * max_cost:g} points of top-1")
            else:
                model.load_state_dict(kept[1])
                drop_fused(model)
                return Outcome(metric, target, kept[0].name, "the cheapest that reached it",
                               base, tuple(tried), max_cost, samples, images, tuple(skipped))
        restore()
        return Outcome(metric, target, "trained", reason, base, tuple(tried), max_cost,
                       samples, images, tuple(skipped))
    except BaseException:
        restore()
        raise
    finally:
        bar.close()
