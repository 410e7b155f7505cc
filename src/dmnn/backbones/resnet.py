"""Bottleneck ResNets: ImageNet ResNet-50/101 (torchvision layout, stride in the 3×3 conv) and a
CIFAR bottleneck ResNet ([3, 4, 6, 3], 3×3 stem without max-pool) with a width multiplier.

DMNN variants split every bottleneck into N sub-blocks of width Ĉ from
:func:`~dmnn.network.split.bottleneck_sub_width` (ResNeXt-50 2×40d / 4×24d widths for N = 2 / 4).
"""

from __future__ import annotations

from functools import partial

from torch import nn

from ..network.block import residual_stages
from ..network.dynamic_net import DynamicNet, check_model_args
from ..network.gate import GateFactory
from ..network.layers import conv_bn, init_weights
from ..network.split import bottleneck_sub_width
from . import Backbone

EXPANSION = 4


def bottleneck_path(c_in: int, width: int, c_out: int, stride: int) -> nn.Sequential:
    """1×1 → 3×3 (stride) → 1×1, BN after each, ReLU after the first two."""
    return nn.Sequential(
        *conv_bn(c_in, width, 1, act=nn.ReLU),
        *conv_bn(width, width, 3, stride, act=nn.ReLU),
        *conv_bn(width, c_out, 1),
    )


def bottleneck_resnet(
    layers: tuple[int, ...],
    *,
    imagenet_stem: bool,
    num_classes: int,
    in_chans: int = 3,
    width_mult: float = 1.0,
    num_sub_blocks: int = 1,
    gate_factory: GateFactory | None = None,
    name: str = "",
    options: dict | None = None,
) -> DynamicNet:
    check_model_args(num_classes, in_chans, width_mult)
    base = max(1, round(64 * width_mult))
    if imagenet_stem:
        stem = nn.Sequential(
            *conv_bn(in_chans, base, 7, 2, act=nn.ReLU), nn.MaxPool2d(3, 2, 1)
        )
    else:
        stem = nn.Sequential(*conv_bn(in_chans, base, 3, act=nn.ReLU))
    first_sub = bottleneck_sub_width(base, num_sub_blocks)  # solved once, doubled like the widths
    stages = [(count, base * 2**i * EXPANSION, first_sub * 2**i) for i, count in enumerate(layers)]
    blocks, c_in = residual_stages(
        stages, base, bottleneck_path, lambda ci, co, s: nn.Sequential(*conv_bn(ci, co, 1, s)),
        num_sub_blocks, gate_factory,
    )
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))
    model = DynamicNet(
        stem, blocks, head, in_chans=in_chans, num_classes=num_classes,
        default_input_size=224 if imagenet_stem else 32,
        arch={"name": name, "family": "bottleneck_resnet", "layers": list(layers),
              "width_mult": width_mult, **(options or {})},
    )
    init_weights(model)
    return model



BACKBONES = [
    Backbone(
        "resnet50", partial(bottleneck_resnet, (3, 4, 6, 3), imagenet_stem=True, num_classes=1000),
        "ImageNet ResNet-50 (torchvision layout, stride in the 3×3 conv), 224×224 input.",
    ),
    Backbone(
        "resnet101",
        partial(bottleneck_resnet, (3, 4, 23, 3), imagenet_stem=True, num_classes=1000),
        "ImageNet ResNet-101 (torchvision layout, stride in the 3×3 conv), 224×224 input.",
    ),
    Backbone(
        "resnet50_cifar",
        partial(bottleneck_resnet, (3, 4, 6, 3), imagenet_stem=False, num_classes=10),
        "CIFAR bottleneck ResNet-50 ([3, 4, 6, 3], 3×3 stem, no max-pool), width_mult, 32×32 "
        "input.", input_size=32,
    ),
]
