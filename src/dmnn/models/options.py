"""Options of the gating methods: the extra keyword arguments of their models, and the gate
factory that turns them into one gate per block."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from torch import nn

from ..controller import DMNNController
from .split import check_num_sub_blocks

GateFactory = Callable[[int, int, int, int], nn.Module]
"""(block index, block input channels, number of paths, path width) -> gate module."""


@dataclass(frozen=True)
class MethodOptions:
    """Base of a method's options: one path per block and ``make_gate`` unless overridden."""

    @property
    def num_paths(self) -> int:
        return 1

    def make_gate(self, index: int, in_channels: int, num_paths: int, width: int) -> nn.Module:
        raise NotImplementedError

    def gate_factory(self) -> GateFactory | None:
        return self.make_gate

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DMNNOptions(MethodOptions):
    """Keyword arguments of every ``dmnn_*`` model.

    num_sub_blocks: N, sub-blocks per residual block.
    hidden_dim: d, controller hidden width.
    prev_state: feed the previous controller's h into the next (eqn 7); off for the ablation.
    num_categories: K, coarse categories for the controllers' category heads; 0 turns them off.
    tau: Gumbel-softmax temperature in training.
    gate_bias: initial on-minus-off logit of every gate (positive = start mostly on).
    """

    num_sub_blocks: int = 2
    hidden_dim: int = 32
    prev_state: bool = True
    num_categories: int = 0
    tau: float = 1.0
    gate_bias: float = 2.0

    def __post_init__(self) -> None:
        check_num_sub_blocks(self.num_sub_blocks)
        if not isinstance(self.hidden_dim, int) or self.hidden_dim < 1:
            raise ValueError(f"hidden_dim must be an integer >= 1, got {self.hidden_dim!r}")
        if not isinstance(self.num_categories, int) or self.num_categories < 0:
            raise ValueError(f"num_categories must be an integer >= 0, got {self.num_categories!r}")
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau!r}")

    @property
    def num_paths(self) -> int:
        return self.num_sub_blocks

    def make_gate(self, index: int, in_channels: int, num_paths: int, width: int) -> nn.Module:
        return DMNNController(
            in_channels, num_paths, self.hidden_dim, prev_state=self.prev_state,
            first=index == 0, num_categories=self.num_categories, tau=self.tau,
            gate_bias=self.gate_bias,
        )


@dataclass(frozen=True)
class TwinOptions(MethodOptions):
    """The ResNeXt-style static twin of a DMNN model: the same N sub-blocks, always on."""

    num_sub_blocks: int = 2

    def __post_init__(self) -> None:
        check_num_sub_blocks(self.num_sub_blocks)

    @property
    def num_paths(self) -> int:
        return self.num_sub_blocks

    def gate_factory(self) -> None:
        return None
