"""The registry: backbones × methods → model names, built by ``create_model`` (timm-style).

Every backbone is registered under its own name as a static network (the ``static`` method) and
once per gating method as ``<method>_<backbone>``; backbones and methods may be added in any order
(:func:`register_backbone`, :func:`register_method`), each new one is crossed with all the others.
Nothing registers on import: the built-in backbones and methods are added explicitly, on the first
call of any function here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from .backbones import Backbone
from .errors import ModelArgumentError, UsageError

if TYPE_CHECKING:
    from .methods.base import Method
    from .network.dynamic_net import DynamicNet

RESERVED = ("name", "num_sub_blocks", "gate_factory", "options")
"""Arguments the registry passes to a backbone's builder itself (a model's own options aside)."""


class _Entry(NamedTuple):
    build: Callable[..., DynamicNet]
    method: Method
    backbone: str


_BACKBONES: dict[str, Backbone] = {}
_METHODS: dict[str, Method] = {}
_MODELS: dict[str, _Entry] = {}
_loaded = False


def _builtins() -> None:
    """Register the built-in methods and backbones (once, on first use)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from .backbones import mobilenetv2, resnet, resnet_cifar
    from .methods import aig, drnet, lcnet, static, twin
    from .methods import dmnn as dmnn_method

    for method in (static, twin, dmnn_method, aig, drnet, lcnet):
        register_method(method.METHOD)
    for module in (resnet_cifar, resnet, mobilenetv2):
        for backbone in module.BACKBONES:
            register_backbone(backbone)


def _cross(backbone: Backbone, method: Method) -> None:
    if not method.applies_to(backbone.name):
        return
    name = method.model_name(backbone.name)
    if name in _MODELS:
        raise RuntimeError(f"model {name!r} registered twice")
    option_names = method.options.model_names()

    takes = _keywords(backbone.build)

    def entrypoint(**kwargs: Any) -> DynamicNet:
        unknown = [k for k in kwargs if k not in option_names
                   and (k in RESERVED or (takes is not None and k not in takes))]
        if unknown:
            accepted = sorted({*option_names, *(takes or ())} - set(RESERVED))
            raise ModelArgumentError(
                f"bad argument for model {name!r}: {unknown[0]!r} is not one of its keyword "
                f"arguments ({', '.join(accepted)})")
        opts = method.options(**{k: kwargs.pop(k) for k in option_names if k in kwargs})
        return opts.finish(backbone.build(
            name=name, num_sub_blocks=opts.num_sub_blocks, gate_factory=opts.gate_factory(),
            options=opts.to_dict(), **kwargs))

    extra = f" Options: {', '.join(option_names)}." if option_names else ""
    entrypoint.__doc__ = (backbone.doc if name == backbone.name
                          else f"{method.doc} of {backbone.name}: {backbone.doc}{extra}")
    _MODELS[name] = _Entry(entrypoint, method, backbone.name)


def register_backbone(backbone: Backbone) -> None:
    """Add a backbone: registers it (static) and ``<method>_<name>`` for every method."""
    if backbone.name in _BACKBONES:
        raise RuntimeError(f"backbone {backbone.name!r} registered twice")
    _builtins()
    _BACKBONES[backbone.name] = backbone
    for method in _METHODS.values():
        _cross(backbone, method)


def register_method(method: Method) -> None:
    """Add a gating method: registers ``<method>_<backbone>`` for every backbone it applies to."""
    if method.name in _METHODS:
        raise RuntimeError(f"method {method.name!r} registered twice")
    _builtins()
    _METHODS[method.name] = method
    for backbone in _BACKBONES.values():
        _cross(backbone, method)


def unregister_method(name: str) -> None:
    """Remove a method and its models (a notebook or a test trying a method out)."""
    _builtins()
    if name not in _METHODS:
        raise UsageError(f"no method {name!r} is registered")
    method = _METHODS.pop(name)
    for name in [n for n, e in _MODELS.items() if e.method is method]:
        del _MODELS[name]


def list_models(method: str | None = None) -> list[str]:
    """Sorted names of registered models, optionally of one method ('static', 'dmnn', ...)."""
    _builtins()
    return sorted(n for n, e in _MODELS.items() if method is None or e.method.name == method)


def list_methods() -> list[Method]:
    """Every registered method, in registration order."""
    _builtins()
    return list(_METHODS.values())


def _entry(name: str) -> _Entry:
    _builtins()
    if name not in _MODELS:
        raise UsageError(
            f"unknown model name {name!r}: choose one of {', '.join(list_models())}"
        )
    return _MODELS[name]


def method_of(name: str) -> Method:
    """The method of a registered model (``aig_resnet56`` → ConvNet-AIG)."""
    return _entry(name).method


def model_method(name: str) -> str:
    """The name of a registered model's method (``aig_resnet56`` → ``aig``)."""
    return method_of(name).name


def backbone_of(name: str) -> str:
    """The static backbone of a registered model (``aig_resnet56`` → ``resnet56``)."""
    return _entry(name).backbone


def native_input_size(name: str) -> int:
    """The input side a registered model's backbone was designed for (32 or 224)."""
    return _BACKBONES[backbone_of(name)].input_size


def create_model(name: str, **kwargs: Any) -> DynamicNet:
    """Build a registered model; unknown names raise UsageError, keyword arguments the model
    does not take ModelArgumentError (both ValueErrors)."""
    return _entry(name).build(**kwargs)


def _keywords(fn: Any) -> frozenset[str] | None:
    """The keyword arguments ``fn`` takes (None: any, it has ``**kwargs``); checked before the
    call, so a TypeError from inside a builder stays the bug it is."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params
                     if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
