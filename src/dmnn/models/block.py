"""A residual block made of N gated paths (DMNN eqn 4) and a static shortcut."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from torch import Tensor, nn

from ..executor import run_paths
from ..gates import GateDecision, GateOverride

if TYPE_CHECKING:
    from .options import GateFactory


class GatedBlock(nn.Module):
    """X_l = act(shortcut(X_{l−1}) + Σ_n s_{l,n}·F_{l,n}(X_{l−1})).

    ``paths`` are the sub-blocks F_{l,n} (plain ``nn.Sequential`` stacks, so the MACs walker and
    the executor understand them); ``gate`` is any module returning a :class:`GateDecision`, or
    None for an always-on (static) block. The shortcut (identity, projection or none) always runs;
    a gated block must have one so that an all-off block still passes its input on.
    """

    def __init__(
        self,
        paths: Sequence[nn.Module],
        shortcut: nn.Module | None,
        gate: nn.Module | None = None,
        *,
        post_act: nn.Module | None = None,
        stage: int = 0,
        in_channels: int = 0,
        out_channels: int = 0,
        stride: int = 1,
        path_width: int = 0,
    ) -> None:
        super().__init__()
        if gate is not None and shortcut is None:
            raise ValueError("a gated block needs a shortcut: with every path off it has no output")
        self.paths = nn.ModuleList(paths)
        self.shortcut = shortcut
        self.gate = gate
        self.post_act = post_act if post_act is not None else nn.Identity()
        self.stage, self.stride, self.path_width = stage, stride, path_width
        self.in_channels, self.out_channels = in_channels, out_channels
        self.execution = "auto"
        self.dense_above: list[float] | None = None  # per path, see executor.run_sparse
        self.gate_override: GateOverride | None = None
        self.index = 0  # position in the network, set by the network

    @property
    def num_paths(self) -> int:
        return len(self.paths)

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

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, GateDecision | None]:
        decision = self.decide(x, state)
        base = self.shortcut(x) if self.shortcut is not None else None
        gates = decision.gates if decision is not None else None
        if gates is not None and hasattr(self.gate, "execute"):  # a method's own execution
            return self.gate.execute(self, x, base, decision), decision
        if gates is not None and getattr(self.gate, "mixing", "residual") == "convex":
            return self.convex(x, base, gates), decision
        out = run_paths(
            self.paths, x, gates, base, self.execution, self.training, self.dense_above
        )
        return self.post_act(out), decision

    def convex(self, x: Tensor, base: Tensor, gates: Tensor) -> Tensor:
        """x_{l+1} = r·F(x) + (1 − r)·shortcut(x), F the whole block (DRNet eqn 4; one path).

        Sparse at eval (binary r): rows with r = 1 get F on just those rows, the others keep the
        shortcut; F is never computed for a skipped row. Training under hard routing (DRNet's
        fine-tuning) runs sparse as well, so F's BN statistics come from the rows it will
        serve at test, not from rows it skips.
        """
        path = self.paths[0]
        hard = not self.training or getattr(self.gate, "hard_routing", False)
        sparse = self.execution == "sparse" or (self.execution == "auto" and hard)
        if not sparse:
            full = self.post_act(base + path(x))
            r = gates[:, :1].to(full.dtype).view(-1, *([1] * (full.dim() - 1)))
            return r * full + (1 - r) * base
        on = gates[:, 0] > 0.5
        count = int(on.sum())
        if count == x.shape[0]:
            return self.post_act(base + path(x))
        if count == 0:
            return base
        rows = on.nonzero().squeeze(1)
        y = self.post_act(base.index_select(0, rows) + path(x.index_select(0, rows)))
        return base.clone().index_copy_(0, rows, y)


PathFactory = Callable[[int, int, int, int], nn.Module]
"""(c_in, width, c_out, stride) -> one sub-block."""
ShortcutFactory = Callable[[int, int, int], nn.Module]
"""(c_in, c_out, stride) -> the shortcut of a block whose shape changes."""


def residual_stages(
    stages: Sequence[tuple[int, int, int]],
    c_in: int,
    make_path: PathFactory,
    make_shortcut: ShortcutFactory,
    num_paths: int,
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
                    [make_path(c_in, width, c_out, stride) for _ in range(num_paths)],
                    shortcut,
                    gate_factory(index, c_in, num_paths, width) if gate_factory else None,
                    post_act=nn.ReLU(inplace=True), stage=stage, in_channels=c_in,
                    out_channels=c_out, stride=stride, path_width=width,
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
