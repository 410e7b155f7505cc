"""The routing record returned by ``model(x, return_routing=True)``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..checks import check_choice
from ..distributed.batch_stats import batch_mean, batch_means
from .macs import MacsTable

MACS_SCOPES = ("network", "dynamic")


def execution_rates(gates: Sequence[Tensor | None]) -> Tensor:
    """Eqn 11: z_l = Σ_i b_i / (B·N) for each gated block (B: the global batch under data
    parallelism, :mod:`dmnn.distributed.batch_stats`)."""
    rates = batch_means([g.float() for g in gates if g is not None])
    return torch.stack(rates) if rates else torch.zeros(0)


@dataclass
class Routing:
    """What the gates decided for a batch.

    gates: per block, (B, N) gates (0/1; straight-through gradients in training); None for an
        always-on block.
    probs: per block, (B, N) soft on-probabilities; None for an always-on block.
    category_logits: per block, (B, K) controller category logits in training, else None.
    macs: (B,) per-sample MACs from the model's table (float64, differentiable in the gates).
    table: the MACs table used.
    stages: stage index of each block (category-loss weights depend on it).
    extras: per block, method-specific tensors from the gate.
    executed: per block, (B, N) 0/1 of the paths that ran (differs from ``gates`` only for gates
        that scale by a continuous salience, e.g. LC-Net); empty means "same as gates".
    """

    gates: list[Tensor | None]
    probs: list[Tensor | None]
    category_logits: list[Tensor | None]
    macs: Tensor
    table: MacsTable
    stages: list[int]
    extras: list[dict[str, Tensor]] = field(default_factory=list)
    executed: list[Tensor | None] = field(default_factory=list)

    @property
    def gated_blocks(self) -> list[int]:
        return [i for i, g in enumerate(self.gates) if g is not None]

    def macs_ratio(self) -> Tensor:
        """Per-sample MACs ÷ the all-on MACs of the whole network."""
        return self.macs / self.table.full

    def execution_rates(self) -> Tensor:
        """Per gated block, the fraction of (sample, sub-block) pairs executed (eqn 11)."""
        return execution_rates(self.executed or self.gates)

    def macs_fraction(self, scope: str = "network") -> Tensor:
        """f / f_total of eqn 14 for the batch (differentiable through the gates).

        ``network``: the whole network's mean MACs ÷ its all-on MACs (what the evaluator
        reports); ``dynamic``: the gated sub-blocks only, eqn 13 literally. The batch is the
        global one under data parallelism."""
        check_choice("macs_scope", scope, MACS_SCOPES)
        table = self.table
        if scope == "dynamic" and table.dynamic_full == 0:
            return self.macs.new_zeros(())
        mean = batch_mean(self.macs)
        if scope == "network":
            return mean / table.full
        return (mean - table.static) / table.dynamic_full
