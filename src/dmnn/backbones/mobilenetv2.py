"""MobileNetV2 (torchvision layout) with width multiplier 1.0 or 1.4.

DMNN variant (§3.1, Fig. 2a): each inverted residual becomes N sub-blocks of expansion E/N, so
parameters and MACs split exactly. An expansion-1 block has no expand conv; its n-th sub-block owns
the n-th 1/N slice of the input channels (depthwise + projection of that slice), the only split
that keeps its parameters. Every block whose shape changes gets a static projection shortcut
(1×1 conv, stride s, + BN) so that a block with every sub-block off still passes features on;
that and the controllers account for the paper's 3.50 M → 3.63 M parameters. Every gated or
multi-path variant (DMNN, its static twin, whole-block gates) has these shortcuts.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from ..network.block import GatedBlock
from ..network.dynamic_net import DynamicNet, check_model_args
from ..network.gate import GateFactory
from ..network.layers import ChannelSlice, conv_bn, init_weights, make_divisible
from ..network.split import even_split
from . import Backbone

# expansion t, output channels c, repeats n, first stride s
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1))


def inverted_residual_path(
    c_in: int, hidden: int, c_out: int, stride: int, expand: bool, part: int = 0, parts: int = 1
) -> nn.Sequential:
    """Expand 1×1 (if t > 1) → depthwise 3×3 → project 1×1, as one sub-block of ``parts``."""
    if expand:
        layers: list[nn.Module] = conv_bn(c_in, hidden, 1, act=nn.ReLU6)
    else:  # t = 1: the hidden features are the input channels themselves
        layers = [ChannelSlice(part * hidden, (part + 1) * hidden)] if parts > 1 else []
    layers += conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6)
    layers += conv_bn(hidden, c_out, 1)
    return nn.Sequential(*layers)


def mobilenetv2(
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    width_mult: float = 1.0,
    dropout: float = 0.2,
    num_sub_blocks: int = 1,
    gate_factory: GateFactory | None = None,
    name: str = "",
    options: dict | None = None,
) -> DynamicNet:
    check_model_args(num_classes, in_chans, width_mult)
    c_in = make_divisible(32 * width_mult)
    last = make_divisible(1280 * max(1.0, width_mult))
    stem = nn.Sequential(*conv_bn(in_chans, c_in, 3, 2, act=nn.ReLU6))
    blocks = []
    for stage, (t, c, n, s) in enumerate(SETTINGS):
        c_out = make_divisible(c * width_mult)
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = int(round(c_in * t))
            sub = even_split(hidden, num_sub_blocks, f"hidden layer of block {len(blocks)} (t={t})")
            residual = stride == 1 and c_in == c_out
            shortcut: nn.Module | None = nn.Identity() if residual else None
            if (gate_factory is not None or num_sub_blocks > 1) and not residual:
                shortcut = nn.Sequential(*conv_bn(c_in, c_out, 1, stride))
            index = len(blocks)
            paths = [
                inverted_residual_path(c_in, sub, c_out, stride, t != 1, p, num_sub_blocks)
                for p in range(num_sub_blocks)
            ]
            blocks.append(
                GatedBlock(
                    paths, shortcut,
                    gate_factory(index, c_in, num_sub_blocks, sub) if gate_factory else None,
                    stage=stage, in_channels=c_in, out_channels=c_out, stride=stride,
                    sub_block_width=sub,
                )
            )
            c_in = c_out
    head = nn.Sequential(
        *conv_bn(c_in, last, 1, act=nn.ReLU6), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Dropout(dropout), nn.Linear(last, num_classes),
    )
    model = DynamicNet(
        stem, blocks, head, in_chans=in_chans, num_classes=num_classes, default_input_size=224,
        arch={"name": name, "family": "mobilenetv2", "width_mult": width_mult, **(options or {})},
    )
    init_weights(model)
    for m in model.modules():
        if isinstance(m, nn.Linear) and m is model.head[-1]:
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return model



BACKBONES = [
    Backbone("mobilenetv2", mobilenetv2,
             "MobileNetV2 (torchvision layout), width_mult 1.0, 224×224 input."),
    Backbone("mobilenetv2_140", partial(mobilenetv2, width_mult=1.4),
             "MobileNetV2 with width multiplier 1.4 (torchvision layout), 224×224 input."),
]
