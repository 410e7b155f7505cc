"""DynamicNet: stem → gated residual blocks → classifier, with routing and MACs built in."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from ..checks import check_int, check_number
from ..errors import UsageError
from . import executor as ex
from .block import GatedBlock
from .gate import training_only_parameters
from .inplace import shares_memory
from .macs import MacsTable, build_macs_table
from .routing import Routing


class DynamicNet(nn.Module):
    """A plain ``nn.Module``: ``model(x)`` returns logits.

    ``model(x, return_routing=True)`` returns ``(logits, Routing)``: per-block gates, category
    logits and per-sample MACs. Static backbones are the same class with ungated blocks, so every
    model shares the MACs table, the executor and the reports.
    """

    def __init__(
        self,
        stem: nn.Module,
        blocks: Sequence[GatedBlock],
        head: nn.Module,
        *,
        in_chans: int,
        num_classes: int,
        default_input_size: int,
        arch: dict[str, Any],
    ) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.execution = "auto"  # the stem's, as each block's (set_execution sets all)
        self.head = head
        self.in_chans, self.num_classes = in_chans, num_classes
        self.default_input_size = default_input_size
        self.arch = dict(arch)
        self._tables: dict[tuple[int, int], MacsTable] = {}
        for i, block in enumerate(self.blocks):
            block.index = i

    # --- structure -----------------------------------------------------------------------------
    @property
    def gated_blocks(self) -> list[GatedBlock]:
        return [b for b in self.blocks if b.gate is not None]

    @property
    def is_dynamic(self) -> bool:
        return any(b.gate is not None for b in self.blocks)

    def stages(self) -> list[int]:
        return [b.stage for b in self.blocks]

    def macs_table(self, input_size: int | tuple[int, int] | None = None) -> MacsTable:
        """The static MACs table for one input size (computed once, then cached)."""
        size = input_size if input_size is not None else self.default_input_size
        key = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if key not in self._tables:
            self._tables[key] = build_macs_table(self, key)
        return self._tables[key]

    def set_execution(self, mode: str, *, mixed_split: str | None = None) -> None:
        """'auto' (grouped/dense in training, fused at eval), 'dense', 'grouped', 'sparse' or
        'fused' (see :mod:`dmnn.execution.dispatch`); ``mixed_split``: how the fused executor
        splits a batch of mixed gate patterns (:data:`~dmnn.network.modes.MIXED_SPLITS`;
        None keeps each block's)."""
        ex.check_mode(mode)
        if mixed_split is not None:
            ex.check_split(mixed_split)
        self.execution = mode
        for block in self.blocks:
            block.execution = mode
            if mixed_split is not None:
                block.mixed_split = mixed_split

    def folds(self) -> bool:
        """Whether the stem runs with BatchNorm folded now (as the blocks do)."""
        return ex.folds(self.execution, self.training)

    def train(self, mode: bool = True) -> DynamicNet:
        ex.executor().drop_fused(self.stem)
        return super().train(mode)

    # --- forward -------------------------------------------------------------------------------
    def check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise UsageError(f"x must be a 4-D (B, C, H, W) tensor, got {shape}")
        if x.shape[1] != self.in_chans:
            raise UsageError(
                f"x has {x.shape[1]} channels but the model was built with in_chans={self.in_chans}"
            )

    def forward(self, x: Tensor, return_routing: bool = False) -> Tensor | tuple[Tensor, Routing]:
        self.check_input(x)
        size = (x.shape[2], x.shape[3])
        image = x
        x = ex.executor().run_folded(self.stem, x) if self.folds() else self.stem(x)
        state: Tensor | None = None
        decisions = []
        for block in self.blocks:
            # a block's input is ours to overwrite unless it is the caller's tensor
            x, decision = block(x, state, donate=not shares_memory(x, image))
            if decision is not None and decision.state is not None:
                state = decision.state
            decisions.append(decision)
        logits = self.head(x)
        if not return_routing:
            return logits
        table = self.macs_table(size)
        gates = [d.gates if d is not None else None for d in decisions]
        executed = [None if d is None else d.gates if d.executed is None else d.executed
                    for d in decisions]
        inactive = [d.inactive if d is not None else None for d in decisions]
        macs = table.per_sample(executed, inactive=inactive)
        if macs.shape[0] != logits.shape[0]:  # a static model has no gates to size it
            macs = macs.expand(logits.shape[0]).clone()
        routing = Routing(
            gates=gates,
            probs=[d.on_probs() if d is not None else None for d in decisions],
            category_logits=[d.category_logits if d is not None else None for d in decisions],
            macs=macs.to(logits.device),
            table=table,
            stages=self.stages(),
            extras=[d.extras if d is not None else {} for d in decisions],
            executed=executed,
        )
        return logits, routing

    def num_params(self, include_category_heads: bool = False) -> int:
        """Parameter count; category heads are training-only and excluded by default."""
        skip = set()
        if not include_category_heads:
            skip = {id(p) for p in training_only_parameters([b.gate for b in self.blocks])}
        return sum(p.numel() for p in self.parameters() if id(p) not in skip)


def check_model_args(num_classes: int, in_chans: int, width_mult: float | None = None) -> None:
    """The arguments every backbone takes (``width_mult`` where it has one)."""
    check_int("num_classes", num_classes, 1)
    check_int("in_chans", in_chans, 1)
    if width_mult is not None:
        check_number("width_mult", width_mult, 0.0, lo_open=True)


def count_params(model: nn.Module) -> int:
    """Parameters of any module; DynamicNet excludes its training-only category heads."""
    if isinstance(model, DynamicNet):
        return model.num_params()
    return sum(p.numel() for p in model.parameters())


