"""Backbones and their DMNN variants; importing this package registers every model."""

from . import mobilenetv2, resnet, resnet_cifar  # noqa: F401  (registration side effects)
from .block import GatedBlock
from .network import DynamicNet, count_params
from .options import DMNNOptions

__all__ = ["DMNNOptions", "DynamicNet", "GatedBlock", "count_params"]
