"""``--amp`` and ``--channels-last``: what a training step runs in.

The forward pass runs under ``torch.autocast``; the loss, the MACs and the routing statistics are
computed in fp32 from its outputs (logits are cast back; gates are 0/1, exact in any dtype). fp16
needs a GradScaler, which torch runs only on CUDA; bf16 has fp32's range and needs none, on the
CPU too.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

from ..errors import UsageError

AMP_MODES = ("off", "bf16", "fp16")
_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """The autocast region and gradient scaler of a run on ``device``."""

    def __init__(self, amp: str, device: torch.device, channels_last: bool = False) -> None:
        if amp not in AMP_MODES:
            raise UsageError(f"--amp must be one of {', '.join(AMP_MODES)}, got {amp!r}")
        if amp == "fp16" and device.type != "cuda":
            raise UsageError(f"--amp fp16 needs CUDA (its GradScaler does not run on "
                             f"{device.type}): use --amp bf16 there")
        self.amp, self.device, self.dtype = amp, device, _DTYPES[amp]
        self.channels_last = channels_last
        self.scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None

    def autocast(self) -> AbstractContextManager[object]:
        return torch.autocast(self.device.type, dtype=self.dtype or torch.float32,
                              enabled=self.dtype is not None)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def model(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """``loss.backward()`` and one optimizer step (scaled under fp16)."""
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, float | int]:
        return dict(self.scaler.state_dict()) if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
