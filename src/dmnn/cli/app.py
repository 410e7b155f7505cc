"""Typer app: every command turns bad input into one line on stderr and exit code 2."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .. import list_models
from ..errors import TrainingError
from ..registry import model_family
from ..summary import build_model, summarize

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="dmnn: dynamic multi-path networks whose compute savings are real and measured.",
)
console = Console(width=None if sys.stdout.isatty() else 160)


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Report bad input (ValueError, FileNotFoundError: exit 2) and runs that cannot go on
    (TrainingError: exit 1, Ctrl-C 130) as one line instead of a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, FileNotFoundError) as err:
            fail(str(err).splitlines()[0] if str(err) else type(err).__name__)
        except TrainingError as err:
            fail(str(err).splitlines()[0], err.exit_code)

    return wrapper


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


@app.command("models")
@friendly
def models_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List registered models."""
    names = list_models()
    if as_json:
        print_json([{"name": n, "family": model_family(n)} for n in names])
        return
    for n in names:
        typer.echo(f"{n:24s} {model_family(n)}")


@app.command("summary")
@friendly
def summary_cmd(
    model: Annotated[str, typer.Argument(help="Registered model name (see `dmnn models`).")],
    sub_blocks: Annotated[
        int | None, typer.Option("--sub-blocks", help="N sub-blocks per block (dmnn_* only).")
    ] = None,
    input_size: Annotated[
        int | None, typer.Option("--input-size", help="Input height = width in pixels.")
    ] = None,
    num_classes: Annotated[int | None, typer.Option("--num-classes", help="Classes.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Parameters, full and minimum MACs, the controllers' share, and a per-block table."""
    net = build_model(model, sub_blocks=sub_blocks, num_classes=num_classes)
    info = summarize(net, input_size)
    if as_json:
        print_json(info)
        return
    console.print(f"[bold]{info['model']}[/bold]  input {info['input_size']}px, "
                  f"{info['num_classes']} classes")
    console.print(f"params           {info['params']:,} ({human(info['params'])})")
    console.print(f"MACs (all on)    {info['macs']:,} ({human(info['macs'])})")
    console.print(f"MACs (all off)   {info['macs_min']:,} ({human(info['macs_min'])}, "
                  f"{info['macs_min'] / info['macs']:.1%} of full)")
    console.print(f"controller MACs  {info['controller_macs']:,} "
                  f"({info['controller_share']:.4%} of full)")
    table = Table(show_edge=False)
    for col in ("block", "stage", "in→out", "stride", "N×width", "params", "shortcut",
                "each sub-block", "controller"):
        table.add_column(col, justify="right")
    for b in info["blocks"]:
        subs = b["sub_block_macs"]
        each = human(subs[0]) if len(set(subs)) == 1 else "/".join(human(s) for s in subs)
        table.add_row(
            str(b["index"]), str(b["stage"]), f"{b['in_channels']}→{b['out_channels']}",
            str(b["stride"]), f"{b['sub_blocks']}×{b['sub_block_width']}"
            + ("" if b["gated"] else " (static)"),
            human(b["params"]), human(b["shortcut_macs"]), each, human(b["controller_macs"]),
        )
    console.print(table)


def main() -> None:
    app()
