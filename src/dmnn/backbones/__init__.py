"""Backbones: CIFAR ResNets, bottleneck ResNets and MobileNetV2, each a function that builds a
:class:`~dmnn.network.dynamic_net.DynamicNet` with N sub-blocks and a gate factory, listed in its
module's ``BACKBONES``. Nothing registers on import (the registry adds them on first use).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from ..network.dynamic_net import DynamicNet


class Backbone(NamedTuple):
    """A registered backbone. ``build(name=, num_sub_blocks=, gate_factory=, options=, **user
    kwargs)`` makes the network; ``doc`` is one line for ``dmnn models`` and docstrings."""

    name: str
    build: Callable[..., DynamicNet]
    doc: str
    input_size: int = 224  # the side its stem was designed for (32 for the CIFAR backbones)
