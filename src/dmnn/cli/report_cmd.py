"""``dmnn report``: figures a person would rather look at than read."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import friendly


def report_cmd(
    paths: Annotated[list[Path], typer.Argument(
        help="Run folders, dmnn eval outputs (.json) or metrics JSONs, any mix.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the figures and index.md.")],
    fmt: Annotated[str, typer.Option("--format", help="png | svg")] = "png",
    data_dir: Annotated[str | None, typer.Option(
        "--data-dir", help="Dataset folder, for the easy/hard images.")] = None,
    allow_mixed: Annotated[bool, typer.Option(
        "--allow-mixed", help="Plot runs of different datasets on one accuracy axis.")] = False,
    latency: Annotated[Path | None, typer.Option(
        "--latency", help="latency_bB.json of these runs timed in one loop "
        "(scripts/frontier/latency.py): accuracy against measured latency, and a table "
        "against the static frontier there.")] = None,
) -> None:
    """Accuracy against MACs and latency, per-image MACs, execution rates per category,
    easy and hard images, training curves; an index.md that shows them.

    Example: dmnn report runs/* --out report --latency results/frontier/proxy/latency_b32.json"""
    from ..evaluation.report import build_report

    report = build_report(paths, out, fmt=fmt, data_dir=data_dir, allow_mixed=allow_mixed,
                          latency=latency)
    for note in report.notes:
        typer.echo(f"note: {note}", err=True)
    for skipped in report.skipped:
        typer.echo(f"skipped: {skipped}", err=True)
    typer.echo(f"{len(report.figures)} figures: {out / 'index.md'}")


def register(app: typer.Typer) -> None:
    app.command("report")(friendly(report_cmd))
