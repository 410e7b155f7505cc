"""The gate protocol: what a gate decides (:class:`GateDecision`), what it may do (:class:`Gate`).

Every gating method (DMNN controllers, whole-block gates, salience nets, ...) subclasses
:class:`Gate`. The block, the executor, the MACs table, calibration and the benchmarks talk to a
gate only through this class, so a new method plugs in without touching any of them. Optional
abilities have defaults that mean "this gate does not have it"; a method overrides the ones it
has (see docs/architecture.md, "The gate protocol").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from .gumbel import on_probs

if TYPE_CHECKING:
    from .block import GatedBlock


@dataclass
class GateDecision:
    """What a gate decides for one block.

    gates: (B, N) sub-block gates; hard 0/1 at eval, 0/1 with straight-through gradients in
        training (a soft-gated method may return values in [0, 1] in training).
    probs: (B, N) soft probability that each sub-block is on, for logging and analysis; None where
        :meth:`on_probs` derives it from ``extras['logits']`` (no op per block unless routing is
        requested).
    state: hidden state handed to the next block's gate (DMNN's h_l), or None.
    category_logits: (B, K) controller category prediction (training only), or None.
    extras: method-specific tensors (e.g. for a method's own losses).
    executed: (B, N) 0/1 of the sub-blocks that run, when that is not ``gates`` itself (a gate
        that scales by a continuous salience); the MACs table counts these.
    inactive: (B,) channels a channel gate switched off inside the block's sub-block, or None.
    """

    gates: Tensor
    probs: Tensor | None = None
    state: Tensor | None = None
    category_logits: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)
    executed: Tensor | None = None
    inactive: Tensor | None = None

    def on_probs(self) -> Tensor | None:
        """``probs``, computed from ``extras['logits']`` when the gate did not store it."""
        if self.probs is None and "logits" in self.extras:
            return on_probs(self.extras["logits"])
        return self.probs


class Gate(nn.Module):
    """Base of every gate: ``forward`` and ``inference_macs`` are required, the rest optional.

    Required:
        forward(x, state) -> GateDecision: decide for the block input x (B, C, H, W); ``state``
            is the previous gate's ``GateDecision.state`` (None for the first).
        inference_macs(in_shape) -> int: MACs of one decision at eval, for one sample.

    Optional abilities (the defaults say "not supported"):
        noise_scale: multiplier of the gate's training noise; the engine anneals it every epoch,
            gates that draw no noise ignore it.
        calibratable / shift_on_logit(delta): move the decision threshold by δ (post-training
            gate calibration needs it).
        execute(block, x, base, decision): how the block combines its sub-blocks under this
            gate; the default is eqn 4's gated residual sum through the block's executor.
        channel_macs(path, in_shape): MACs one switched-off channel saves (channel gates).
        training_only_modules(): modules that run only in training (DMNN's category heads);
            excluded from parameter counts and inference MACs.
        decide_all_on(): make the gate decide "on" for every input by itself (benchmarks time a
            real all-on gate instead of a forced one); returns whether it could.
        optional_state: buffers added after checkpoints were first written; a checkpoint without
            them loads (the gate's ``_load_from_state_dict`` supplies the old value).
    """

    calibratable: ClassVar[bool] = False
    optional_state: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        super().__init__()
        self.noise_scale = 1.0

    def forward(self, x: Tensor, state: Tensor | None = None) -> GateDecision:
        raise NotImplementedError

    def inference_macs(self, in_shape: tuple[int, ...]) -> int:
        raise NotImplementedError

    def shift_on_logit(self, delta: float) -> None:
        raise TypeError(f"{type(self).__name__} has no decision threshold to shift")

    def execute(self, block: GatedBlock, x: Tensor, base: Tensor | None,
                decision: GateDecision) -> Tensor:
        """X_l = act(shortcut(x) + Σ_n s_n·F_n(x)) (eqn 4), dense or sparse by the block's mode."""
        return block.activate(block.run_paths(x, decision.gates, base), x)

    def channel_macs(self, path: nn.Module, in_shape: tuple[int, ...]) -> int:
        return 0

    def training_only_modules(self) -> list[nn.Module]:
        return []

    def decide_all_on(self) -> bool:
        return False


GateOverride = Callable[[int, int, torch.device], Tensor]
"""(block index, batch size, device) -> (B, N) 0/1 gates replacing a block's decision."""

GateFactory = Callable[[int, int, int, int], Gate]
"""(block index, block input channels, N sub-blocks, sub-block width) -> the block's gate."""


def gates_of(model: nn.Module) -> list[Gate]:
    """Every gate inside ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, Gate)]


def set_gate_noise(model: nn.Module, scale: float) -> None:
    """Scale the training noise of every gate (see :func:`dmnn.network.gumbel.noise_schedule`)."""
    for gate in gates_of(model):
        gate.noise_scale = scale


def training_only_parameters(gates: Sequence[Gate | None]) -> list[nn.Parameter]:
    return [p for g in gates if g is not None for m in g.training_only_modules()
            for p in m.parameters()]
