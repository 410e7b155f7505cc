"""Static twins: each DMNN model's N sub-blocks, always on (the ResNeXt-style grouped twin).

``keep_sub_blocks`` k < N keeps only the first k sub-blocks of every block: a static network at
about k/N of the blocks' MACs, built from the very sub-blocks a DMNN chooses between. It is the
static point a DMNN at r ≈ k/N must beat (the static frontier, results/frontier), and a
``twin_*`` checkpoint with k = N is the warm start of a ``dmnn_*`` run (``--init-from``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..checks import option
from .base import Method, MethodOptions

if TYPE_CHECKING:
    from ..data import DataBundle
    from ..network.dynamic_net import DynamicNet
    from ..train.config import TrainConfig


@dataclass(frozen=True)
class TwinOptions(MethodOptions):
    """The same N sub-blocks as ``dmnn_*``, no controllers; the first ``keep_sub_blocks``
    of them in every block (0: all N)."""

    num_sub_blocks: int = option(2, min=1)
    keep_sub_blocks: int = option(0, min=0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.keep_sub_blocks > self.num_sub_blocks:
            raise ValueError(f"keep_sub_blocks must be in [0, num_sub_blocks = "
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

    family = "twin"
    prefix = "twin"
    options = TwinOptions
    gated = False
    owns = ("keep_sub_blocks",)
    doc = "Static twin (N always-on sub-blocks)"

    def model_kwargs(self, cfg: TrainConfig, data: DataBundle) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"num_sub_blocks": cfg.num_sub_blocks}
        if cfg.keep_sub_blocks:
            kwargs["keep_sub_blocks"] = cfg.keep_sub_blocks
        return kwargs

    def check_config(self, cfg: TrainConfig) -> None:
        if cfg.keep_sub_blocks > cfg.num_sub_blocks:
            raise ValueError(f"keep_sub_blocks must be at most --sub-blocks "
                             f"({cfg.num_sub_blocks}), got {cfg.keep_sub_blocks}")


METHOD = Twin()
