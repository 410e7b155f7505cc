"""Range and type checks, written once: model options, losses, the training config and the
benchmarks all validate through these, so every bad value gets the same one-line message."""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .errors import UsageError


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_int(name: str, value: Any, minimum: int | None = None) -> int:
    """An integer (bool is not one) of at least ``minimum``."""
    if not is_int(value) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise UsageError(f"{name} must be an integer{bound}, got {value!r}")
    return value


def interval(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    """The interval as a person writes it: (0, 1], [0, 1), >= 0, > 0."""
    if hi is None:
        return f"> {lo:g}" if lo_open else f">= {lo:g}"
    if lo is None:
        return f"< {hi:g}" if hi_open else f"<= {hi:g}"
    return f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


def check_number(
    name: str, value: Any, lo: float | None = None, hi: float | None = None, *,
    lo_open: bool = False, hi_open: bool = False,
) -> float:
    """A finite number in the interval (NaN and ±inf never pass)."""
    if not is_number(value) or not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number, got {value!r}")
    below = lo is not None and (value <= lo if lo_open else value < lo)
    above = hi is not None and (value >= hi if hi_open else value > hi)
    if below or above:
        raise UsageError(f"{name} must be {_in(lo, hi)}{interval(lo, hi, lo_open, hi_open)}, "
                         f"got {value!r}")
    return value


def _in(lo: float | None, hi: float | None) -> str:
    return "in " if lo is not None and hi is not None else ""


def check_rate(value: Any, name: str = "target rate r") -> float:
    """A target rate r in (0, 1]: every method's compute target."""
    return check_number(name, value, 0.0, 1.0, lo_open=True)


def check_output(path: Path, option: str, *, folder: bool) -> None:
    """``path`` can be written (a folder to create or fill, or a file to create or replace):
    ValueError in one line otherwise, before anything is written."""
    if str(path) in ("", "."):
        raise UsageError(f"{option} must name a {'folder' if folder else 'file'}, "
                         f"got {str(path)!r}")
    if path.exists() and path.is_dir() != folder:
        kind = "a folder" if path.is_dir() else "not a folder"
        raise UsageError(f"{option} {path} exists and is {kind}: pick another path")
    probe = path if folder else path.parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: {probe} is not a writable folder")


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise UsageError(f"{name} must be one of {choices}, got {value!r}")
    return value


# --- declared options: one dataclass field = name, type, default, help, range ------------------

def option(
    default: Any = None, *, help: str = "", flag: str | None = None, label: str | None = None,
    resume: bool = False, check: Callable[[Any, str], Any] | None = None,
    cli: bool = True, min: float | None = None, max: float | None = None,
    lo_open: bool = False, hi_open: bool = False, choices: tuple[str, ...] | None = None,
    default_factory: Any = None, model: bool = True,
) -> Any:
    """A dataclass field carrying what the CLI and validation need to know about an option.

    ``help`` becomes the ``--flag``'s help, ``flag`` overrides its spelling ("--sub-blocks",
    "--calibrate/--no-calibrate"), ``resume`` lets ``dmnn train --resume`` change it, ``cli=False``
    keeps it out of the command line (and out of saved configs, for a method's option set from the
    data); ``model=False`` marks a method's training option, not a model keyword argument
    (:class:`~dmnn.methods.base.MethodOptions`); ``label`` names it in error messages (default:
    the field name); ``min``/``max``/``choices`` (or a shared ``check(value, name)``, e.g.
    :func:`check_rate`) are checked by :func:`check_fields` together with the field's type.
    """
    metadata = {"help": help, "flag": flag, "label": label, "resume": resume, "check": check,
                "cli": cli,
                "min": min, "max": max, "lo_open": lo_open, "hi_open": hi_open,
                "choices": choices, "model": model}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def field_types(cls: type) -> dict[str, Any]:
    """The resolved type of every field of dataclass ``cls``."""
    return typing.get_type_hints(cls)


def union_args(tp: Any) -> tuple[Any, ...]:
    """(int, NoneType) of ``int | None``; (tp,) of a plain type."""
    union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    return typing.get_args(tp) if union else (tp,)


def _kinds(tp: Any) -> tuple[set[type], bool]:
    """({int, float, ...}, None allowed) of a field type such as ``int | None``."""
    args = union_args(tp)
    kinds = {typing.get_origin(a) or a for a in args if a is not type(None)}
    return kinds, type(None) in args


def check_value(name: str, value: Any, tp: Any, meta: typing.Mapping[str, Any]) -> None:
    """``value`` against the field's type and declared range (one-line ValueError)."""
    kinds, nullable = _kinds(tp)
    if value is None:
        if not nullable:
            raise UsageError(f"{name} must be given (it has no 'none' value)")
        return
    if meta.get("check") is not None:
        meta["check"](value, name)
        return
    lo, hi = meta.get("min"), meta.get("max")
    bounded = lo is not None or hi is not None
    if kinds & {float} and is_number(value):
        if bounded:
            check_number(name, value, lo, hi, lo_open=meta.get("lo_open", False),
                         hi_open=meta.get("hi_open", False))
        else:
            check_number(name, value)
    elif int in kinds and is_int(value):
        if lo is not None and value < lo or hi is not None and value > hi:
            raise UsageError(f"{name} must be an integer {_in(lo, hi)}"
                             f"{interval(lo, hi, False, False)}, got {value!r}")
    elif (bool in kinds and isinstance(value, bool)) or (str in kinds and isinstance(value, str)):
        choices = meta.get("choices")
        if choices and value not in choices:
            raise UsageError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    elif dataclasses.is_dataclass(value) and any(
            isinstance(k, type) and isinstance(value, k) for k in kinds):
        check_fields(value)  # a nested section (TrainConfig.loss, TrainConfig.options)
    elif list in kinds and isinstance(value, list):
        if not all(is_int(v) for v in value):
            raise UsageError(f"{name} must be a list of integers, got {value!r}")
    else:
        names = sorted(k.__name__ for k in kinds) + (["none"] if nullable else [])
        raise UsageError(f"{name} must be {' or '.join(names)}, got {value!r}"
                         f" ({type(value).__name__})")


def check_fields(obj: Any) -> None:
    """Check every field of dataclass instance ``obj`` against its type and declared range."""
    hints = field_types(type(obj))
    for f in dataclasses.fields(obj):
        check_value(f.metadata.get("label") or f.name, getattr(obj, f.name), hints[f.name],
                    f.metadata)
