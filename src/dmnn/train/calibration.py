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
images; results/frontier/README.md). Tables compare every run at its measured MACs, so a run left
a little off its target is reported as it is, never hidden.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from ..checks import check_choice, check_number
from ..evaluation.metrics import collect, summarize_record
from ..network.dynamic_net import DynamicNet
from ..network.gate import Gate

METRICS = ("macs_ratio", "macs_ratio_dynamic", "exec_rate")


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
        raise ValueError("the model has no gates to calibrate (a static model)")
    for gate in gates:
        if not gate.calibratable:
            raise ValueError(
                f"{type(gate).__name__} has no decision threshold to shift: gate calibration "
                "needs gates with calibratable = True (DMNN, ConvNet-AIG, DRNet, LC-Net)"
            )
    return gates


def can_calibrate(model: DynamicNet) -> bool:
    try:
        shiftable_gates(model)
    except ValueError:
        return False
    return True


def measure(
    model: DynamicNet, batches: Iterable, input_size: int, metric: str, device: torch.device
) -> tuple[float, int]:
    """``metric`` of ``model`` in eval mode over ``batches`` and the number of samples: the
    evaluator's own definition (:func:`dmnn.evaluation.metrics.summarize_record`)."""
    summary = summarize_record(collect(model, batches, device), model, input_size)
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
) -> Calibration:
    """Shift every gate's on-logit by the δ in [−bound, bound] that brings ``metric`` on
    ``batches`` within ``tol`` of ``target`` (the closest one found if none does); no shift at
    all when the trained gates are already within ``max(tol, slack)`` of it."""
    check_choice("metric", metric, METRICS)
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
        value, n = measure(model, batches, input_size, metric, device)
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
