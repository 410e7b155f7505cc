"""Static twins: each DMNN model's N sub-blocks, always on (the ResNeXt-style grouped twin)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..checks import option
from .base import Method, MethodOptions

if TYPE_CHECKING:
    from ..data import DataBundle
    from ..train.config import TrainConfig


@dataclass(frozen=True)
class TwinOptions(MethodOptions):
    """The same N sub-blocks as ``dmnn_*``, no controllers."""

    num_sub_blocks: int = option(2, min=1)

    def gate_factory(self) -> None:
        return None


class Twin(Method):
    """``twin_*``: what DMNN costs with every sub-block on and no controllers."""

    family = "twin"
    prefix = "twin"
    options = TwinOptions
    gated = False
    doc = "Static twin (N always-on sub-blocks)"

    def model_kwargs(self, cfg: TrainConfig, data: DataBundle) -> dict[str, Any]:
        return {"num_sub_blocks": cfg.num_sub_blocks}


METHOD = Twin()
