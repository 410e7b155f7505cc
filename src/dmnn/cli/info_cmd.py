"""``dmnn models`` and ``dmnn summary``: what is registered, and what a model costs."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ..evaluation.model_summary import build_model, summarize_model
from ..registry import list_models, model_method
from .app import console, friendly, human, print_json


def models_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List registered models."""
    names = list_models()
    if as_json:
        print_json([{"name": n, "method": model_method(n)} for n in names])
        return
    for n in names:
        typer.echo(f"{n:24s} {model_method(n)}")


def summary_cmd(
    model: Annotated[str, typer.Argument(help="Registered model name (see `dmnn models`).")],
    sub_blocks: Annotated[
        int | None, typer.Option("--sub-blocks", help="N sub-blocks per block (dmnn_*, twin_*).")
    ] = None,
    input_size: Annotated[
        int | None, typer.Option("--input-size", help="Input height = width in pixels.")
    ] = None,
    num_classes: Annotated[int | None, typer.Option("--num-classes", help="Classes.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Parameters, full and minimum MACs, the controllers' share, and a per-block table."""
    net = build_model(model, sub_blocks=sub_blocks, num_classes=num_classes)
    info = summarize_model(net, input_size)
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


def register(app: typer.Typer) -> None:
    app.command("models")(friendly(models_cmd))
    app.command("summary")(friendly(summary_cmd))
