"""Registers each backbone twice: the static network and its DMNN variant (``dmnn_`` prefix)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields

from ..registry import register_model
from .network import DynamicNet
from .options import DMNNOptions

DMNN_FIELDS = tuple(f.name for f in fields(DMNNOptions))


def register_backbone(name: str, build: Callable[..., DynamicNet], doc: str) -> None:
    """``build(name=, num_paths=, gate_factory=, options=, **user kwargs)`` makes the network."""

    def static(**kwargs) -> DynamicNet:
        return build(name=name, **kwargs)

    def dmnn(**kwargs) -> DynamicNet:
        opts = DMNNOptions(**{k: kwargs.pop(k) for k in DMNN_FIELDS if k in kwargs})
        return build(
            name=f"dmnn_{name}", num_paths=opts.num_sub_blocks, gate_factory=opts.gate_factory(),
            options=opts.to_dict(), **kwargs,
        )

    static.__doc__ = doc
    dmnn.__doc__ = f"DMNN variant of {name}: {doc} Takes DMNN options {', '.join(DMNN_FIELDS)}."
    register_model("static", name)(static)
    register_model("dmnn", f"dmnn_{name}")(dmnn)
