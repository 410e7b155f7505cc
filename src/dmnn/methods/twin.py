"""Static twins: each DMNN model's N sub-blocks, always on (the ResNeXt-style grouped twin).

``keep_sub_blocks`` k < N keeps only the first k sub-blocks of every block: a static network at
about k/N of the blocks' MACs, built from the very sub-blocks a DMNN chooses between. It is the
static point a DMNN at r ≈ k/N must beat (the static frontier, results/frontier), and a
``twin_*`` checkpoint with k = N is the warm start of a ``dmnn_*`` run (``--init-from``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..checks import option
from ..errors import UsageError
from .base import Method, SubBlocks

if TYPE_CHECKING:
    from ..network.dynamic_net import DynamicNet


@dataclass(frozen=True)
class TwinOptions(SubBlocks):
    """The same N sub-blocks as ``dmnn_*``, no controllers; the first ``keep_sub_blocks``
    of them in every block (0: all N)."""

    keep_sub_blocks: int = option(0, min=0, help=(
        "Twin: keep the first k of the N sub-blocks in every block, a static net at about k/N "
        "of the blocks' MACs (0: all N)."))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.keep_sub_blocks > self.num_sub_blocks:
            raise UsageError(f"keep_sub_blocks must be in [0, num_sub_blocks = "
                             f"{self.num_sub_blocks}], got {self.keep_sub_blocks}")

    def gate_factory(self) -> None:
        return None

    def finish(self, model: DynamicNet) -> DynamicNet:
        """Drop sub-blocks k+1..N of every block that has N (the split blocks)."""
        k, n = self.keep_sub_blocks, self.num_sub_blocks
        if k and k < n:
            for block in model.blocks:
                if block.num_sub_blocks == n:
                    del block.paths[k:]
        return model


class Twin(Method):
    """``twin_*``: what DMNN costs with every sub-block on and no controllers."""

    name = "twin"
    options = TwinOptions
    gated = False
    doc = "Static twin (N always-on sub-blocks)"


METHOD = Twin()
