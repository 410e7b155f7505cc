"""A residual block made of N gated paths (DMNN eqn 4) and a static shortcut."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ..executor import run_paths
from ..gates import GateDecision, GateOverride


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
        return decision

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, GateDecision | None]:
        decision = self.decide(x, state)
        base = self.shortcut(x) if self.shortcut is not None else None
        gates = decision.gates if decision is not None else None
        out = run_paths(self.paths, x, gates, base, self.execution, self.training)
        return self.post_act(out), decision
