"""Small layers shared by the backbones; each is understood by the MACs shape walker."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import UsageError


def conv_bn(
    c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: type | None = None
) -> list[nn.Module]:
    """Conv (no bias, 'same'-style padding) + BN (+ activation) as a flat list for Sequentials."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if act is not None:
        layers.append(act(inplace=True))
    return layers


class ChannelSlice(nn.Module):
    """Selects channels [start, stop): lets expansion-1 MobileNetV2 sub-blocks own a slice."""

    def __init__(self, start: int, stop: int) -> None:
        super().__init__()
        self.start, self.stop = start, stop

    def forward(self, x: Tensor) -> Tensor:
        return x[:, self.start : self.stop]

    def extra_repr(self) -> str:
        return f"start={self.start}, stop={self.stop}"


class PadShortcut(nn.Module):
    """CIFAR ResNet option-A shortcut: subsample by stride, zero-pad new channels (no params)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        if c_out < c_in:
            raise UsageError(f"PadShortcut needs c_out >= c_in, got c_in={c_in}, c_out={c_out}")
        self.c_in, self.c_out, self.stride = c_in, c_out, stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        extra = self.c_out - self.c_in
        if extra == 0:
            return x
        pad = x.new_zeros(x.shape[0], extra, x.shape[2], x.shape[3])
        return torch.cat([x, pad], dim=1)

    def extra_repr(self) -> str:
        return f"c_in={self.c_in}, c_out={self.c_out}, stride={self.stride}"


def make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNet channel rounding (never more than 10% below ``value``)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def init_weights(module: nn.Module) -> None:
    """He init for convs, unit BN, small normal for linears: the torchvision ResNet/MBv2 recipe."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
