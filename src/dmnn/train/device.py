"""Which torch device a run uses (``--device cpu | cuda[:N] | auto``)."""

from __future__ import annotations

import torch

from ..errors import UsageError


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available: use --device cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise UsageError(f"device must be cpu, cuda[:N] or auto, got {name!r}")
    return torch.device(name)
