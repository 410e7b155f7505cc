"""Registers every backbone as a static network and once per gating method (``<prefix>_<name>``).

A method is an options dataclass with ``num_paths`` (paths per block), ``gate_factory()`` (None for
an ungated twin) and ``to_dict()``; its fields are the extra keyword arguments of its models.
Backbones and methods may register in any order: each new one is crossed with all the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

from ..registry import register_model
from .network import DynamicNet
from .options import DMNNOptions


@dataclass(frozen=True)
class Method:
    prefix: str
    family: str
    options: type
    doc: str
    backbones: Callable[[str], bool] = lambda name: True  # which backbones it applies to


_BACKBONES: dict[str, tuple[Callable[..., DynamicNet], str]] = {}
_METHODS: list[Method] = [Method("dmnn", "dmnn", DMNNOptions, "DMNN variant (N sub-blocks)")]


def _register_variant(name: str, method: Method) -> None:
    build, doc = _BACKBONES[name]
    option_names = tuple(f.name for f in fields(method.options))

    def variant(**kwargs) -> DynamicNet:
        opts = method.options(**{k: kwargs.pop(k) for k in option_names if k in kwargs})
        return build(
            name=f"{method.prefix}_{name}", num_paths=opts.num_paths,
            gate_factory=opts.gate_factory(), options=opts.to_dict(), **kwargs,
        )

    variant.__doc__ = f"{method.doc} of {name}: {doc} Options: {', '.join(option_names)}."
    register_model(method.family, f"{method.prefix}_{name}")(variant)


def register_backbone(name: str, build: Callable[..., DynamicNet], doc: str) -> None:
    """``build(name=, num_paths=, gate_factory=, options=, **user kwargs)`` makes the network."""

    def static(**kwargs) -> DynamicNet:
        return build(name=name, **kwargs)

    static.__doc__ = doc
    _BACKBONES[name] = (build, doc)
    register_model("static", name)(static)
    for method in _METHODS:
        if method.backbones(name):
            _register_variant(name, method)


def register_method(
    prefix: str, family: str, options: type, doc: str,
    backbones: Callable[[str], bool] | None = None,
) -> None:
    """Add a gating method: registers ``<prefix>_<backbone>`` for every (matching) backbone."""
    method = Method(prefix, family, options, doc, backbones or (lambda name: True))
    _METHODS.append(method)
    for name in _BACKBONES:
        if method.backbones(name):
            _register_variant(name, method)


def backbone_of(name: str) -> str:
    """The static backbone of a registered variant (``aig_resnet56`` → ``resnet56``)."""
    for method in _METHODS:
        if name.startswith(f"{method.prefix}_") and name[len(method.prefix) + 1 :] in _BACKBONES:
            return name[len(method.prefix) + 1 :]
    if name in _BACKBONES:
        return name
    raise ValueError(f"unknown model name {name!r}")
