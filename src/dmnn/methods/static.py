"""The static backbones as a method: the trivial case of the interface (no gate, classification
loss, nothing per epoch, no calibration). Registered under the backbones' own names."""

from __future__ import annotations

from .base import Method, NoGate


class Static(Method):
    """``resnet56``, ``mobilenetv2``, ...: the network a user would otherwise deploy."""

    family = "static"
    prefix = None
    options = NoGate
    gated = False
    doc = "Static backbone"


METHOD = Static()
