"""The static backbones as a method: the trivial case of the interface (no gate, classification
loss, nothing per epoch, no calibration). Registered under the backbones' own names."""

from __future__ import annotations

from .base import Method, NoGate


class Static(Method):
    """``resnet56``, ``mobilenetv2``, ...: the network a user would otherwise deploy."""

    name = "static"
    options = NoGate
    gated = False
    doc = "Static backbone"

    def model_name(self, backbone: str) -> str:
        """The backbone's own name: ``resnet56`` is the static ResNet-56."""
        return backbone


METHOD = Static()
