"""Where the network hands its blocks to :mod:`dmnn.execution`: the one dispatch point.

``network/`` says *what* a block computes (eqn 4); ``execution/`` says *how* (dense, grouped,
sparse, fused) and imports the network's layers to do it. So the dependency points one way: no
network module imports ``execution/`` at module level, and :func:`executor` reaches it on first
use. Every setting lives on the model (``execution``, ``mixed_split`` on each block; see
:mod:`.modes`), never in a process-wide variable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from torch import Tensor, nn

from .modes import check_mode, check_split, folds, resolve, skips

__all__ = ["Executor", "check_mode", "check_split", "executor", "folds", "resolve", "skips"]


class Executor(Protocol):
    """What a block and the network need from the execution engine."""

    def run_paths(self, paths: Sequence[nn.Module], x: Tensor, gates: Tensor | None,
                  base: Tensor | None, mode: str, training: bool,
                  dense_above: Sequence[float] | None = None, *, owned: bool = False,
                  split: str = "pattern") -> Tensor: ...

    def run_folded(self, module: nn.Module, x: Tensor) -> Tensor: ...

    def drop_fused(self, module: nn.Module) -> None: ...


def executor() -> Executor:
    """The execution engine (:mod:`dmnn.execution.dispatch`), imported on first use."""
    from ..execution import dispatch  # deferred: execution imports the network, not the reverse

    return dispatch  # type: ignore[return-value]
