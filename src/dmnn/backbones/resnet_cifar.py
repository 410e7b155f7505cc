"""CIFAR ResNets with basic blocks (He et al. 2016, §4.2): 6n+2 layers, widths 16-32-64.

Shortcuts are option A (stride-2 subsampling + zero channel padding, parameter-free), the
original CIFAR recipe; resnet56 has 0.85 M parameters and 125.5 M MACs at 32×32.
``width_mult`` scales every width (stem and stages, rounded): the static frontier of equal-schedule
ResNets at lower MACs (0.75 → widths 12-24-48, 0.5 → 8-16-32; MACs scale about as its square).
"""

from __future__ import annotations

from functools import partial

from torch import nn

from ..errors import UsageError
from ..network.block import residual_stages
from ..network.dynamic_net import DynamicNet, check_model_args
from ..network.gate import GateFactory
from ..network.layers import PadShortcut, conv_bn, init_weights
from ..network.split import even_split
from . import Backbone

CIFAR_WIDTHS = (16, 32, 64)


def basic_path(c_in: int, width: int, c_out: int, stride: int) -> nn.Sequential:
    """F(x) of a basic block: 3×3 conv → BN → ReLU → 3×3 conv → BN."""
    return nn.Sequential(*conv_bn(c_in, width, 3, stride, act=nn.ReLU), *conv_bn(width, c_out, 3))


def cifar_resnet(
    depth: int,
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    num_sub_blocks: int = 1,
    gate_factory: GateFactory | None = None,
    width_mult: float = 1.0,
    name: str = "",
    options: dict | None = None,
) -> DynamicNet:
    if (depth - 2) % 6:
        raise UsageError(f"depth must be 6n+2 for a CIFAR ResNet, got {depth}")
    check_model_args(num_classes, in_chans, width_mult)
    per_stage = (depth - 2) // 6
    widths = [max(1, round(w * width_mult)) for w in CIFAR_WIDTHS]
    stem = nn.Sequential(*conv_bn(in_chans, widths[0], 3, act=nn.ReLU))
    stages = [
        (per_stage, w, even_split(w, num_sub_blocks, f"stage-{i + 1} basic block"))
        for i, w in enumerate(widths)
    ]
    blocks, c_in = residual_stages(
        stages, widths[0], basic_path, PadShortcut, num_sub_blocks, gate_factory
    )
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))
    model = DynamicNet(
        stem, blocks, head, in_chans=in_chans, num_classes=num_classes, default_input_size=32,
        arch={"name": name, "family": "cifar_resnet", "depth": depth,
              **({"width_mult": width_mult} if width_mult != 1.0 else {}), **(options or {})},
    )
    init_weights(model)
    return model



BACKBONES = [
    Backbone(
        f"resnet{depth}", partial(cifar_resnet, depth),
        f"CIFAR ResNet-{depth} (basic blocks, widths 16-32-64, option-A shortcuts, 32×32 input).",
        input_size=32,
    )
    for depth in (8, 14, 20, 32, 56, 110)
]
