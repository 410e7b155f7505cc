"""The typer app and what every command shares: bad input becomes one ``error:`` line on stderr
and exit status 2 (:func:`friendly`). Commands live in ``*_cmd.py`` and are added by
:func:`dmnn.cli.build`."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import typer
from rich.console import Console

from ..errors import TrainingError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: it wraps help text, rich cut option names at 80
    help="dmnn: dynamic multi-path networks whose compute savings are real and measured.",
)
console = Console(width=None if sys.stdout.isatty() else 160)


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One line instead of a traceback, with one exit-status rule for every command:

    2: bad input, found before anything is written (ValueError, FileNotFoundError, a checkpoint
    that cannot be read); 1: a run that cannot go on (TrainingError, a failed write such as a
    full disk); 130: Ctrl-C, anywhere (start-up, data loading, training, calibration)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError) as err:
            fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
        except TrainingError as err:
            fail(str(err).splitlines()[0], err.exit_code)
        except KeyboardInterrupt:
            fail("interrupted: nothing was saved", 130)
        except MemoryError:
            fail("out of memory: lower --batch-size (or --eval-batch-size, --input-size)", 1)
        except OSError as err:
            where = f" ({err.filename})" if err.filename else ""
            fail(f"{err.strerror or err}{where}", 1)

    return wrapper


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def main() -> None:
    app()
