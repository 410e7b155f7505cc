"""A residual block made of N gated paths (DMNN eqn 4) and a static shortcut."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..errors import UsageError
from . import executor as ex
from .gate import Gate, GateDecision, GateFactory, GateOverride
from .inplace import global_hooks, shares_memory


class GatedBlock(nn.Module):
    """X_l = act(shortcut(X_{l−1}) + Σ_n s_{l,n}·F_{l,n}(X_{l−1})).

    ``paths`` are the sub-blocks F_{l,n} (plain ``nn.Sequential`` stacks, so the MACs walker and
    the executor understand them; the attribute keeps its name because checkpoints store
    ``blocks.L.paths.n.*``); ``gate`` is a :class:`~dmnn.network.gate.Gate`, or None for an
    always-on (static) block. The shortcut (identity, projection or none) always runs; a gated
    block must have one so that an all-off block still passes its input on.
    """

    def __init__(
        self,
        paths: Sequence[nn.Module],
        shortcut: nn.Module | None,
        gate: Gate | None = None,
        *,
        post_act: nn.Module | None = None,
        stage: int = 0,
        in_channels: int = 0,
        out_channels: int = 0,
        stride: int = 1,
        sub_block_width: int = 0,
    ) -> None:
        super().__init__()
        if gate is not None and not isinstance(gate, Gate):
            raise TypeError(f"a block's gate must subclass dmnn.Gate, got {type(gate).__name__}")
        if gate is not None and shortcut is None:
            raise UsageError("a gated block needs a shortcut: with every path off it has no output")
        self.paths = nn.ModuleList(paths)
        self.shortcut = shortcut
        self.gate = gate
        self.post_act = post_act if post_act is not None else nn.Identity()
        self.stage, self.stride, self.sub_block_width = stage, stride, sub_block_width
        self.in_channels, self.out_channels = in_channels, out_channels
        self.execution = "auto"  # see dmnn.network.executor
        self.mixed_split = "pattern"  # the fused executor's split of a mixed batch
        self.dense_above: list[float] | None = None  # per sub-block, see execution.sparse
        self.gate_override: GateOverride | None = None
        self.index = 0  # position in the network, set by the network
        self._owned_base: Tensor | None = None  # the base this forward may write in place

    @property
    def num_sub_blocks(self) -> int:
        """N, the number of sub-blocks (1 for a whole-block gate or a static block)."""
        return len(self.paths)

    def runs_sparse(self, hard: bool | None = None) -> bool:
        """Whether off rows are skipped now: mode ``sparse`` or ``fused``, or ``auto`` with hard
        decisions (``hard`` defaults to eval mode)."""
        hard = not self.training if hard is None else hard
        return ex.skips(self.execution, training=not hard)

    def run_paths(self, x: Tensor, gates: Tensor | None, base: Tensor | None) -> Tensor:
        """base + Σ_n s_n·F_n(x) by the block's execution mode (no activation). The sum is
        written into ``base`` when this forward owns it (see :meth:`forward`)."""
        owned = base is not None and base is self._owned_base
        return ex.executor().run_paths(self.paths, x, gates, base, self.execution,
                                       self.training, self.dense_above, owned=owned,
                                       split=self.mixed_split)

    def activate(self, out: Tensor, x: Tensor) -> Tensor:
        """``post_act(out)``: the block's activation runs in place, so with autograd on it must
        not run on the block's input itself (every path off, identity shortcut: ``out`` is
        ``x``, which the layer before saved for its backward)."""
        if torch.is_grad_enabled() and shares_memory(out, x):
            out = out.clone()
        return self.post_act(out)

    def _hooked(self) -> bool:
        """Whether a hook anywhere in the block (or a global one) could hold its input or the
        shortcut's output: then neither is written in place."""
        return global_hooks() or any(
            m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
            or m._backward_pre_hooks for m in self.modules())

    def decide(self, x: Tensor, state: Tensor | None) -> GateDecision | None:
        """Run the gate (even when overridden, so its cost and state stay real)."""
        if self.gate is None:
            return None
        decision = self.gate(x, state)
        if self.gate_override is not None:
            forced = self.gate_override(self.index, x.shape[0], x.device)
            decision.gates = forced.to(device=x.device, dtype=decision.gates.dtype)
            decision.executed = None  # what runs is now exactly the forced gates
        return decision

    def folds(self) -> bool:
        """Whether BatchNorm is folded now (eval, mode ``auto`` or ``fused``)."""
        return ex.folds(self.execution, self.training)

    def train(self, mode: bool = True) -> GatedBlock:
        ex.executor().drop_fused(self)  # rebuilt from the trained weights at the next eval
        return super().train(mode)

    def forward(
        self, x: Tensor, state: Tensor | None = None, *, donate: bool = False
    ) -> tuple[Tensor, GateDecision | None]:
        """``donate``: the caller no longer needs ``x`` (the network passes each block's output
        on), so without autograd an identity shortcut's sum is written into ``x`` instead of a
        clone of it; a projection shortcut's fresh output is written into in any case. Why: at
        eval a batch-sized copy and its page faults per block cost more than the scatter-add
        itself (DMNN-50, batch 32, 224 px: 0.665 → 0.599 × static ResNet-50)."""
        decision = self.decide(x, state)
        base = None
        if self.shortcut is not None:
            base = ex.executor().run_folded(self.shortcut, x) if self.folds() \
                else self.shortcut(x)
        if base is not None and (donate or not shares_memory(base, x)) \
                and not torch.is_grad_enabled() and not self._hooked():
            self._owned_base = base
        try:
            if decision is None:
                return self.activate(self.run_paths(x, None, base), x), None
            return self.gate.execute(self, x, base, decision), decision
        finally:
            self._owned_base = None


PathFactory = Callable[[int, int, int, int], nn.Module]
"""(c_in, width, c_out, stride) -> one sub-block."""
ShortcutFactory = Callable[[int, int, int], nn.Module]
"""(c_in, c_out, stride) -> the shortcut of a block whose shape changes."""


def residual_stages(
    stages: Sequence[tuple[int, int, int]],
    c_in: int,
    make_path: PathFactory,
    make_shortcut: ShortcutFactory,
    num_sub_blocks: int,
    gate_factory: GateFactory | None,
) -> tuple[list[GatedBlock], int]:
    """ResNet-style stages of (blocks, C_out, sub-block width); stride 2 opens every stage but the
    first. Returns the blocks and the final channel count."""
    blocks: list[GatedBlock] = []
    for stage, (count, c_out, width) in enumerate(stages):
        for i in range(count):
            stride = 2 if stage > 0 and i == 0 else 1
            shortcut: nn.Module = nn.Identity()
            if stride != 1 or c_in != c_out:
                shortcut = make_shortcut(c_in, c_out, stride)
            index = len(blocks)
            blocks.append(
                GatedBlock(
                    [make_path(c_in, width, c_out, stride) for _ in range(num_sub_blocks)],
                    shortcut,
                    gate_factory(index, c_in, num_sub_blocks, width) if gate_factory else None,
                    post_act=nn.ReLU(inplace=True), stage=stage, in_channels=c_in,
                    out_channels=c_out, stride=stride, sub_block_width=width,
                )
            )
            c_in = c_out
    return blocks, c_in


@contextmanager
def blocks_patched(blocks: Sequence[GatedBlock], attr: str, value: object) -> Iterator[None]:
    """Set ``attr`` on every block for the duration of a ``with``, then restore each old value."""
    saved = [getattr(b, attr) for b in blocks]
    for b in blocks:
        setattr(b, attr, value)
    try:
        yield
    finally:
        for b, old in zip(blocks, saved, strict=True):
            setattr(b, attr, old)
