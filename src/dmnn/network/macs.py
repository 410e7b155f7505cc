"""Exact multiply-accumulate accounting: one static table per model and input size.

Convention: MACs of convolutions and fully connected layers only (BN, activations, pooling,
additions and gathers are not counted), the convention in which ResNet-50 at 224 px costs 4.09 G
and in which ``torch.utils.flop_counter.FlopCounterMode`` counts FLOPs = 2 × MACs.

The table is derived from the modules by walking shapes, not by running the network, so it costs
nothing and stays independent of the FLOP counter it is checked against. Per-sample MACs are
``static + Σ_l Σ_n s_{l,n} · paths[l][n]``; this table is the single source of MACs for the
losses, the evaluator, the executor and the reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ..errors import UsageError
from .layers import ChannelSlice, PadShortcut

if TYPE_CHECKING:
    from .dynamic_net import DynamicNet

Shape = tuple[int, ...]


@runtime_checkable
class CountsMacs(Protocol):
    """A layer of one's own that the walker should count: ``macs_and_shape(in_shape)`` returns
    (MACs for one sample, output shape)."""

    def macs_and_shape(self, shape: Shape) -> tuple[int, Shape]: ...

_SHAPE_PRESERVING = (
    nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.Identity, nn.Dropout, nn.Hardswish, nn.Sigmoid,
    nn.LeakyReLU,
)


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv_out_size(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def walk(module: nn.Module | None, shape: Shape) -> tuple[int, Shape]:
    """(MACs, output shape) of ``module`` for one sample of ``shape`` (C, H, W) or (F,)."""
    if module is None or isinstance(module, _SHAPE_PRESERVING):
        return 0, shape
    if isinstance(module, nn.Sequential):
        total = 0
        for child in module:
            macs, shape = walk(child, shape)
            total += macs
        return total, shape
    if isinstance(module, nn.Conv2d):
        c, h, w = shape
        if c != module.in_channels:
            raise UsageError(f"{module} got {c} input channels")
        if isinstance(module.padding, str):
            raise TypeError(f"string padding is not supported by the MACs walker: {module}")
        (kh, kw), (sh, sw) = _pair(module.kernel_size), _pair(module.stride)
        (ph, pw), (dh, dw) = _pair(module.padding), _pair(module.dilation)
        ho, wo = conv_out_size(h, kh, sh, ph, dh), conv_out_size(w, kw, sw, pw, dw)
        if ho < 1 or wo < 1:
            raise UsageError(f"feature map {h}×{w} is too small for {module}: use a larger input")
        macs = module.out_channels * ho * wo * (c // module.groups) * kh * kw
        return macs, (module.out_channels, ho, wo)
    if isinstance(module, nn.Linear):
        if shape != (module.in_features,):
            raise UsageError(f"{module} got input shape {shape}")
        return module.in_features * module.out_features, (module.out_features,)
    if isinstance(module, nn.MaxPool2d | nn.AvgPool2d):
        c, h, w = shape
        (kh, kw), (sh, sw) = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)
        (ph, pw) = _pair(module.padding)
        if module.ceil_mode:
            raise TypeError("ceil_mode pooling is not supported by the MACs walker")
        return 0, (c, conv_out_size(h, kh, sh, ph), conv_out_size(w, kw, sw, pw))
    if isinstance(module, nn.AdaptiveAvgPool2d):
        oh, ow = _pair(module.output_size)  # type: ignore[arg-type]
        return 0, (shape[0], oh, ow)
    if isinstance(module, nn.Flatten):
        n = 1
        for s in shape:
            n *= s
        return 0, (n,)
    if isinstance(module, ChannelSlice):
        return 0, (module.stop - module.start, *shape[1:])
    if isinstance(module, PadShortcut):
        _, h, w = shape
        s = module.stride
        return 0, (module.c_out, -(-h // s), -(-w // s))
    if isinstance(module, CountsMacs):
        return module.macs_and_shape(shape)
    raise TypeError(
        f"the MACs walker does not know {type(module).__name__}; give it macs_and_shape()"
    )


@dataclass(frozen=True)
class MacsTable:
    """Per-module MACs of one model at one input size (one sample)."""

    input_size: tuple[int, int]
    stem: int
    head: int
    shortcut: tuple[int, ...]
    controller: tuple[int, ...]
    paths: tuple[tuple[int, ...], ...]
    gated: tuple[bool, ...]
    channel_macs: tuple[int, ...] = ()  # per block: MACs saved per inactive channel-gated channel

    @property
    def num_blocks(self) -> int:
        return len(self.paths)

    @property
    def controller_total(self) -> int:
        return sum(self.controller)

    @property
    def dynamic_full(self) -> int:
        """MACs of every gated sub-block: f_total of the dynamic-part ratio."""
        return sum(sum(p) for p, g in zip(self.paths, self.gated, strict=True) if g)

    @property
    def static(self) -> int:
        """MACs spent whatever the gates say: stem, head, shortcuts, controllers, static blocks."""
        fixed = sum(sum(p) for p, g in zip(self.paths, self.gated, strict=True) if not g)
        return self.stem + self.head + sum(self.shortcut) + self.controller_total + fixed

    @property
    def full(self) -> int:
        """Every sub-block on."""
        return self.static + self.dynamic_full

    @property
    def minimum(self) -> int:
        """Every gated sub-block off."""
        return self.static

    def per_sample(
        self, gates: Sequence[Tensor | None], dtype: torch.dtype = torch.float64,
        inactive: Sequence[Tensor | None] | None = None,
    ) -> Tensor:
        """Per-sample MACs (B,) for per-block gates (B, N); None means an always-on block.

        Differentiable in the gates, so losses can use it (eqn 13 is its batch mean).
        ``inactive``: per block, (B,) channels switched off inside path 0 by a channel gate;
        each saves ``channel_macs`` of that block where the path runs.
        """
        if len(gates) != self.num_blocks:
            raise UsageError(f"gates has {len(gates)} blocks, the table has {self.num_blocks}")
        total: Tensor | None = None
        for i, (g, cost, gated) in enumerate(zip(gates, self.paths, self.gated, strict=True)):
            if g is None or not gated:
                continue
            c = torch.tensor(cost, dtype=dtype, device=g.device)
            term = (g.to(dtype) * c).sum(dim=1)
            off = inactive[i] if inactive is not None else None
            if off is not None and self.channel_macs:
                term = term - g[:, 0].to(dtype) * off.to(dtype) * self.channel_macs[i]
            total = term if total is None else total + term
        if total is None:
            batch = next((g.shape[0] for g in gates if g is not None), 1)
            device = next((g.device for g in gates if g is not None), None)
            return torch.full((batch,), float(self.static), dtype=dtype, device=device)
        return total + self.static

    def to_dict(self) -> dict:
        return {
            "input_size": list(self.input_size),
            "macs": self.full,
            "macs_min": self.minimum,
            "macs_static": self.static,
            "macs_dynamic": self.dynamic_full,
            "controller_macs": self.controller_total,
            "stem": self.stem,
            "head": self.head,
            "blocks": [
                {"shortcut": s, "controller": c, "sub_blocks": list(p), "gated": g}
                for s, c, p, g in zip(
                    self.shortcut, self.controller, self.paths, self.gated, strict=True
                )
            ],
        }


def build_macs_table(model: DynamicNet, input_size: tuple[int, int]) -> MacsTable:
    """Walk the model's stem, blocks and head for one (H, W) input."""
    shape: Shape = (model.in_chans, *input_size)
    stem, shape = walk(model.stem, shape)
    shortcut, controller, paths, gated, channel = [], [], [], [], []
    for block in model.blocks:
        in_shape = shape
        path_macs = []
        out_shape: Shape | None = None
        for path in block.paths:
            macs, out_shape = walk(path, in_shape)
            path_macs.append(macs)
        sc_macs, sc_shape = (0, None)
        if block.shortcut is not None:
            sc_macs, sc_shape = walk(block.shortcut, in_shape)
        if sc_shape is not None and out_shape is not None and sc_shape != out_shape:
            raise UsageError(f"block {block.index}: shortcut gives {sc_shape}, paths {out_shape}")
        gate = block.gate
        ctrl = gate.inference_macs(in_shape) if gate is not None else 0
        channel.append(gate.channel_macs(block.paths[0], in_shape) if gate is not None else 0)
        shortcut.append(sc_macs)
        controller.append(ctrl)
        paths.append(tuple(path_macs))
        gated.append(gate is not None)
        assert out_shape is not None
        shape = out_shape
    head, _ = walk(model.head, shape)
    return MacsTable(
        input_size=tuple(input_size),  # type: ignore[arg-type]
        stem=stem, head=head, shortcut=tuple(shortcut), controller=tuple(controller),
        paths=tuple(paths), gated=tuple(gated),
        channel_macs=tuple(channel) if any(channel) else (),
    )
