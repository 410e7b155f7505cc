"""Execution modes and the rule that picks an executor from a mode: written once, read by the
network (which layers to fold, whether off rows are skipped) and by :mod:`dmnn.execution`."""

from __future__ import annotations

from typing import Literal

from ..checks import check_choice

ExecutionMode = Literal["auto", "dense", "sparse", "grouped", "fused"]
EXECUTION_MODES: tuple[str, ...] = ("auto", "dense", "sparse", "grouped", "fused")

MixedSplit = Literal["pattern", "path", "auto"]
MIXED_SPLITS: tuple[str, ...] = ("pattern", "path", "auto")
"""How the fused executor splits a batch with mixed gate patterns: ``pattern`` (the default)
runs each pattern's rows through that pattern's fused stack (up to 2^N − 1 calls, the wide ones
grouped); ``path`` runs each sub-block's folded stack on the rows where it is on (at most N
calls, each on more rows, both-on rows scattered twice); ``auto`` takes whichever makes fewer
calls (ties: ``pattern``). Off rows are never computed in any of them."""


def check_mode(mode: str) -> None:
    check_choice("execution mode", mode, EXECUTION_MODES)


def check_split(split: str) -> None:
    check_choice("mixed split", split, MIXED_SPLITS)


def resolve(mode: str, training: bool) -> str:
    """The executor a mode means now. The one place the ``auto`` rule is written: ``grouped``
    (else dense) in training, where the straight-through gradient needs every sub-block;
    ``fused`` (else sparse) at eval, where off sub-blocks are skipped and BatchNorm is folded."""
    if mode == "auto":
        return "fused" if not training else "grouped"
    return mode


def folds(mode: str, training: bool) -> bool:
    """Whether BatchNorm is folded into the convolutions now (eval, resolved to ``fused``)."""
    return not training and resolve(mode, training) == "fused"


def skips(mode: str, training: bool) -> bool:
    """Whether off rows are skipped now (sparse or fused)."""
    return resolve(mode, training) in ("sparse", "fused")
