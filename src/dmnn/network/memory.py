"""Activation-memory estimates, walked from module shapes (like the MACs table), so that a
configuration that cannot fit is refused in one line before anything is allocated.

Why: a 32 px dataset served at 224 px, or ``dmnn bench --input-size 100000``, otherwise grows
until the kernel's OOM killer ends the process without a message.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from torch import nn

from ..errors import UsageError
from .macs import Shape, walk

if TYPE_CHECKING:
    from .dynamic_net import DynamicNet

FLOAT = 4  # bytes


def _outputs(module: nn.Module | None, shape: Shape) -> tuple[int, int, Shape]:
    """(sum, largest) of the elements of every layer output of ``module`` for one sample."""
    if isinstance(module, nn.Sequential):
        total = peak = 0
        for child in module:
            t, p, shape = _outputs(child, shape)
            total, peak = total + t, max(peak, p)
        return total, peak, shape
    _, out = walk(module, shape)
    n = math.prod(out)
    return n, n, out


def activation_elements(model: DynamicNet, input_size: tuple[int, int]) -> tuple[int, int]:
    """(sum over every layer output, largest layer output) for one sample, all sub-blocks on."""
    shape: Shape = (model.in_chans, *input_size)
    total, peak, shape = _outputs(model.stem, shape)
    for block in model.blocks:
        out = shape
        for path in block.paths:
            t, p, out = _outputs(path, shape)
            total, peak = total + t, max(peak, p)
        if block.shortcut is not None:
            t, p, _ = _outputs(block.shortcut, shape)
            total, peak = total + t, max(peak, p)
        shape = out
    t, p, _ = _outputs(model.head, shape)
    return total + t, max(peak, p)


def training_bytes(model: DynamicNet, input_size: tuple[int, int], batch: int) -> int:
    """About what one training step holds: every activation and its gradient, plus weights,
    gradients and momentum."""
    total, _ = activation_elements(model, input_size)
    params = sum(p.numel() for p in model.parameters())
    return FLOAT * (2 * batch * total + 3 * params)


def inference_bytes(model: DynamicNet, input_size: tuple[int, int], batch: int) -> int:
    """About the peak of one eval forward: the input and a few of the largest feature maps."""
    _, peak = activation_elements(model, input_size)
    inputs = model.in_chans * input_size[0] * input_size[1]
    return FLOAT * batch * (inputs + 4 * peak)


def available_bytes() -> int | None:
    """Memory this process can still use (MemAvailable), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(need: int, what: str, fix: str) -> None:
    """ValueError in one line when ``need`` bytes exceed the memory available."""
    have = available_bytes()
    if have is not None and need > have:
        raise UsageError(f"{what} needs about {need / 2**30:.1f} GiB of memory, "
                         f"{have / 2**30:.1f} GiB is available: {fix}")
