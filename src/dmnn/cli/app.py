"""The typer app and what every command shares: an error dmnn raises on purpose becomes one
``error:`` line on stderr with its exit status (:func:`friendly`); a bug keeps its traceback.
Commands live in ``*_cmd.py`` and are added by :func:`dmnn.cli.build`."""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from functools import wraps
from typing import Any

import typer
from rich.console import Console

from ..errors import DmnnError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain click help: it wraps help text, rich cut option names at 80
    help="dmnn: dynamic multi-path networks whose compute savings are real and measured.",
)
console = Console(width=None if sys.stdout.isatty() else 160)


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.callback()
def _options(
    debug: bool = typer.Option(
        False, "--debug", help="Show the traceback of every error, also of the one-line ones "
        "(or set DMNN_DEBUG=1, which torchrun passes to its workers)."),
) -> None:
    _invocation["debug"] = debug  # set by every invocation, so it never outlives one


_invocation: dict[str, bool] = {"debug": False}


def debugging() -> bool:
    """``dmnn --debug …`` or ``DMNN_DEBUG=1``."""
    return _invocation["debug"] or os.environ.get("DMNN_DEBUG", "") not in ("", "0")


def _out_of_memory() -> tuple[type[BaseException], ...]:
    """MemoryError, and torch's OutOfMemoryError when torch is loaded (a device out of memory)."""
    oom = getattr(sys.modules.get("torch"), "OutOfMemoryError", None)
    return (MemoryError,) if oom is None else (MemoryError, oom)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One exit-status rule for every command, decided by the exception's type:

    a :class:`~dmnn.errors.DmnnError` prints its one line and exits with its ``exit_code`` (2:
    bad input, found before anything is written; 1: a run that cannot go on); a missing file
    exits 2, another failed read or write (a full disk) 1, Ctrl-C 130 anywhere (start-up, data
    loading, training, calibration), out of memory 1. Anything else is a bug: its traceback is
    shown, then one ``error:`` line saying so, exit 1. ``--debug`` shows the traceback of the
    one-line errors too."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.BadParameter):
            raise  # typer's own exits and usage errors
        except KeyboardInterrupt:
            if debugging():
                raise
            fail("interrupted: nothing was saved", 130)
        except DmnnError as err:
            if debugging():
                raise
            fail(str(err).splitlines()[0] if str(err) else type(err).__name__, err.exit_code)
        except _out_of_memory():
            if debugging():
                raise
            fail("out of memory: lower --batch-size (or --eval-batch-size, --input-size)", 1)
        except OSError as err:
            if debugging():
                raise
            where = f" ({err.filename})" if err.filename else ""
            fail(f"{err.strerror or err}{where}", 2 if isinstance(err, FileNotFoundError) else 1)
        except Exception as err:
            traceback.print_exc()
            fail(f"unexpected {type(err).__name__}: a bug in dmnn, the traceback is above "
                 "(please report it with the command you ran)", 1)
        finally:
            _leave_process_group()

    return wrapper


def _leave_process_group() -> None:
    """Destroy the torchrun process group a command joined: left to the interpreter's exit, a
    rank's gloo threads could be torn down while running ("terminate called without an active
    exception", SIGABRT after `dmnn eval` had finished under torchrun, now and then)."""
    if "torch.distributed" in sys.modules:
        from ..distributed.group import shutdown

        shutdown()


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def main() -> None:
    app()
