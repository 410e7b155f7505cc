"""timm-style model registry: one name per architecture, built by ``create_model``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_FAMILIES: dict[str, str] = {}


def register_model(
    family: str, name: str | None = None
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register an entrypoint (under ``name`` or its function name) in ``family``."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or fn.__name__
        if key in _MODELS:
            raise RuntimeError(f"model {key!r} registered twice")
        _MODELS[key] = fn
        _FAMILIES[key] = family
        return fn

    return wrap


def list_models(family: str | None = None) -> list[str]:
    """Sorted names of registered models, optionally of one family ('static', 'dmnn', ...)."""
    return sorted(n for n in _MODELS if family is None or _FAMILIES[n] == family)


def model_family(name: str) -> str:
    _check_name(name)
    return _FAMILIES[name]


def _check_name(name: str) -> None:
    if name not in _MODELS:
        raise ValueError(
            f"unknown model name {name!r}: choose one of {', '.join(list_models())}"
        )


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model; unknown names and bad keyword arguments raise ValueError."""
    _check_name(name)
    try:
        return _MODELS[name](**kwargs)
    except TypeError as err:
        if "unexpected keyword argument" not in str(err):
            raise
        raise ValueError(f"bad argument for model {name!r}: {err}") from None
