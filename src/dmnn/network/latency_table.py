"""A measured latency table (``dmnn profile``) as a cost model, beside the MACs table.

The table (format ``dmnn-latency/1``, written by :mod:`dmnn.evaluation.profile`) prices one
forward of a batch of ``batch`` images: stem, head and, per block, its
all-off cost ``base`` plus, for every gate pattern p that occurs in the batch, what p's k rows
add, ``inc_{l,p}(k)`` (piecewise linear through measured points), all times ``scale`` (the
whole all-on forward ÷ the sum of its parts; older tables add an ``overhead`` instead), except
when p has all ``batch`` rows: then nothing is gathered or scattered and p costs its measured
``full_ms``; a block that runs m > 1 patterns pays its ``shared_ms`` once, not m times (older
tables lack both keys and price without them). Two uses:

* :meth:`LatencyTable.predict_ms`: the predicted time of a batch of executed (0/1) gates: what
  ``dmnn eval`` and gate calibration report as ``latency_ratio`` beside the MACs ratio.
* :meth:`LatencyTable.expected_fraction`: the expected time under the gates' on-probabilities,
  as a fraction of the static backbone's, differentiable in the probabilities: the resource
  term of ``--budget latency``.

The expectation: a deployed batch of B images is modelled as B independent draws from the
training batch's mixture of patterns, image i taking pattern S with probability
P_i(S) = Π_{n∈S} p_{i,n} · Π_{n∉S} (1 − p_{i,n}), so q_S = mean_i P_i(S) (the global batch
under data parallelism). Pattern S's row count k_S is then Binomial(B, q_S), and

    E[inc_S(k_S)] ≈ P(k_S > 0) · inc_S(E[k_S] / P(k_S > 0)),  P(k_S > 0) = 1 − (1 − q_S)^B,

which is exact when inc_S is linear (call·P(k > 0) + row·E[k]) and at B = 1; a whole batch of
S adds P(k_S = B) · (full_S − inc_S(B)) with P(k_S = B) = q_S^B, and the shared term is
−shared · E[(m − 1)⁺] = −shared · (Σ_S P(k_S > 0) − 1 + q_∅^B). The tests against a
brute-force enumeration pin all three. Patterns not timed (N > 3: the table has single
paths) cost the sum of their paths, as :meth:`predict_ms` prices them. Channel-level savings
(LC-Net's channel saliences) are not in the table: it prices which paths run.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..distributed.batch_stats import batch_means
from ..errors import UsageError
from ..files import read_json_input

if TYPE_CHECKING:
    from .dynamic_net import DynamicNet

FORMAT = "dmnn-latency/1"
MAX_EXPECTED = 8
"""Up to this N a block's 2^N − 1 patterns are enumerated in the expected latency."""


def pattern_key(on: Sequence[int]) -> str:
    """``"0,2"``: the on sub-blocks of a pattern."""
    return ",".join(map(str, on))


def pattern_counts(gates: Tensor) -> dict[tuple[int, ...], int]:
    """Rows per non-empty pattern of a (B, N) gate tensor."""
    counts: dict[tuple[int, ...], int] = {}
    for row in (gates > 0.5).tolist():
        on = tuple(i for i, g in enumerate(row) if g)
        if on:
            counts[on] = counts.get(on, 0) + 1
    return counts


def increment(cost: dict[str, Any], rows: float) -> float:
    """What a pattern's ``rows`` add to its block: piecewise linear through the measured
    ``points`` (beyond them, the nearest segment's slope), else ``call + row · rows``. Why the
    points: a row's cost is not constant (a few rows stay in cache, many do not)."""
    points = cost.get("points") or []
    if len(points) < 2:
        return cost["call_ms"] + cost["row_ms"] * rows
    i = 1
    while i < len(points) - 1 and rows > points[i][0]:
        i += 1
    (k0, t0), (k1, t1) = points[i - 1], points[i]
    return t0 + (t1 - t0) * (rows - k0) / (k1 - k0)


def whole_batch(cost: dict[str, Any], rows: float) -> float:
    """What a pattern costs with every one of the table's ``rows`` (= its batch): its measured
    ``full_ms`` (no gather, no scatter), else :func:`increment` at ``rows``."""
    return float(cost["full_ms"]) if "full_ms" in cost else increment(cost, rows)


def increment_tensor(cost: dict[str, Any], rows: Tensor) -> Tensor:
    """:func:`increment` of a tensor of (real) row counts, differentiable in ``rows``."""
    points = cost.get("points") or []
    if len(points) < 2:
        return cost["call_ms"] + cost["row_ms"] * rows
    ks = [float(k) for k, _ in points]
    out = torch.zeros_like(rows)
    for i in range(1, len(points)):
        (k0, t0), (k1, t1) = points[i - 1], points[i]
        lo = -float("inf") if i == 1 else ks[i - 1]
        hi = float("inf") if i == len(points) - 1 else ks[i]
        inside = (rows > lo) & (rows <= hi)
        out = torch.where(inside, t0 + (t1 - t0) * (rows - k0) / (k1 - k0), out)
    return out


def path_patterns(n: int) -> list[tuple[int, ...]]:
    """Every non-empty gate pattern of a block of N sub-blocks."""
    return [p for k in range(1, n + 1) for p in itertools.combinations(range(n), k)]


class LatencyTable:
    """A ``dmnn profile`` table: the JSON as written (``data``) and the arithmetic on it."""

    def __init__(self, data: dict[str, Any], source: str = "the latency table") -> None:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UsageError(f"{source} is not a latency table ({FORMAT}): write one with "
                             "`dmnn profile MODEL --out FILE.json`")
        self.data, self.source = data, source

    @classmethod
    def from_file(cls, path: str | Path, option: str = "--latency-table") -> LatencyTable:
        """Read a table; a missing or unreadable file is a one-line usage error on ``option``."""
        data = read_json_input(path, option, "write one with `dmnn profile MODEL --out FILE.json`")
        return cls(data, f"{option} {Path(path)}")

    # --- what the table is for ------------------------------------------------------------------
    @property
    def model(self) -> str:
        return str(self.data["model"])

    @property
    def batch(self) -> int:
        return int(self.data["batch"])

    @property
    def input_size(self) -> int:
        return int(self.data["input_size"])

    @property
    def static_ms(self) -> float:
        return float(self.data["static_ms"])

    @property
    def blocks(self) -> list[dict[str, Any]]:
        return self.data["blocks"]

    @property
    def scale(self) -> float:
        """The whole forward ÷ the sum of its parts, fitted on all on (``dmnn profile``): every
        price is multiplied by it (1 in tables from before it, which add ``overhead_ms``)."""
        return float(self.data.get("scale", 1.0))

    @property
    def fixed_ms(self) -> float:
        """What every forward costs whatever the gates, unscaled: stem, head, overhead, every
        base."""
        return (self.data["stem_ms"] + self.data["head_ms"] + self.data.get("overhead_ms", 0.0)
                + sum(b["base_ms"] for b in self.blocks))

    @property
    def minimum_fraction(self) -> float:
        """Every gated sub-block off, as a fraction of the static backbone."""
        return self.scale * self.fixed_ms / self.static_ms

    def check_for(self, name: str, model: DynamicNet, input_size: int,
                  batch: int | None = None, option: str = "--latency-table") -> None:
        """Refuse a table measured for another model, input size or batch size."""
        where = self.source
        if self.model != name:
            raise UsageError(f"{where} was profiled for {self.model}, not {name}: profile "
                             f"this model (`dmnn profile {name} --out FILE.json`)")
        shape = [(b.num_sub_blocks, b.gate is not None) for b in model.blocks]
        ours = [(int(b["num_sub_blocks"]), bool(b["gated"])) for b in self.blocks]
        if shape != ours:
            raise UsageError(f"{where} has {len(ours)} blocks of other sub-blocks than this "
                             f"{name} ({len(shape)} blocks): profile it with the run's "
                             "--sub-blocks")
        if self.input_size != input_size:
            raise UsageError(f"{where} was profiled at {self.input_size} px, the data is "
                             f"{input_size} px: profile with --input-size {input_size}")
        if batch is not None and self.batch != batch:
            raise UsageError(f"{where} was profiled at batch {self.batch}, not --latency-batch "
                             f"{batch}: profile with --batch {batch}")
        too_big = [b["num_sub_blocks"] for b in self.blocks if b["num_sub_blocks"] > MAX_EXPECTED]
        if too_big:
            raise UsageError(f"{where}: the expected latency enumerates gate patterns, so N "
                             f"must be at most {MAX_EXPECTED} (got {max(too_big)})")

    # --- prices ---------------------------------------------------------------------------------
    def _pattern_cost(self, entry: dict[str, Any], on: Sequence[int]) -> list[dict[str, Any]]:
        """The timed costs pattern ``on`` pays: its own, else its paths' (per-path model)."""
        key = pattern_key(on)
        if key in entry["patterns"]:
            return [entry["patterns"][key]]
        return [entry["patterns"][pattern_key((i,))] for i in on]

    def predict_ms(self, gates: Sequence[Tensor | None]) -> float:
        """Predicted forward milliseconds for the executed gates of one batch (one (B, N) tensor
        per block, None for an ungated one)."""
        if len(gates) != len(self.blocks):
            raise UsageError(f"{len(gates)} gate tensors for a table of {len(self.blocks)} "
                             "blocks")
        total = self.fixed_ms
        for entry, g in zip(self.blocks, gates, strict=True):
            if g is None:
                continue
            counts = pattern_counts(g)
            for on, k in counts.items():
                price = whole_batch if k == g.shape[0] == self.data.get("batch") else increment
                total += sum(price(c, k) for c in self._pattern_cost(entry, on))
            total -= max(0, len(counts) - 1) * entry.get("shared_ms", 0.0)
        return self.scale * total

    def predicted_ratio(self, gates: Sequence[Tensor | None]) -> float:
        """The mean predicted time ÷ the static backbone's over consecutive batches of
        ``batch`` rows of per-sample gates (n, N) (the remainder dropped when there is a whole
        batch; all rows when there is not)."""
        rows = next((g.shape[0] for g in gates if g is not None), 0)
        if rows == 0:
            return self.minimum_fraction
        b = min(self.batch, rows)
        chunks = [[None if g is None else g[s:s + b] for g in gates]
                  for s in range(0, rows - b + 1, b)]
        return sum(self.predict_ms(c) for c in chunks) / len(chunks) / self.static_ms

    def expected_ms(self, probs: Sequence[Tensor | None], gradient: str = "exact") -> Tensor:
        """Expected forward milliseconds of a batch of ``batch`` images under per-image
        on-probabilities (one (B', N) tensor per block, None for an ungated one; B' any
        training batch); differentiable in ``probs`` (the module docstring's formula).

        ``gradient="rows"``: the same value, with the gradient of its per-row part alone,
        Σ_S row_S · E[k_S]. Why: the per-call part P(k_S > 0) · call_S is concave in q_S (a
        pattern's first rows cost its whole call), so where calls dominate (small images,
        small batches) the exact gradient at all-on points further on and descent never
        leaves it; the per-row part is linear, so every gate turned off is a saving."""
        if len(probs) != len(self.blocks):
            raise UsageError(f"{len(probs)} gate tensors for a table of {len(self.blocks)} "
                             "blocks")
        if gradient not in ("exact", "rows"):
            raise UsageError(f"gradient must be exact or rows, got {gradient!r}")
        b = float(self.batch)
        terms: list[Tensor] = []
        linear: list[Tensor] = []
        for entry, p in zip(self.blocks, probs, strict=True):
            if p is None:
                continue
            p = p.double().clamp(0.0, 1.0)
            n = p.shape[1]
            keys = path_patterns(n)
            joint = torch.stack([
                torch.prod(torch.stack([p[:, i] if i in on else 1 - p[:, i] for i in range(n)]),
                           dim=0) for on in keys], dim=1)  # (B', patterns)
            q = batch_means([joint], dim=0)[0].clamp(0.0, 1.0)
            occurs = 1 - (1 - q) ** b  # P(k_S > 0)
            rows = b * q / occurs.clamp_min(1e-12)  # E[k_S | k_S > 0]
            rows = torch.where(occurs > 1e-12, rows, torch.ones_like(rows))
            for j, on in enumerate(keys):
                costs = self._pattern_cost(entry, on)
                inc = sum(increment_tensor(c, rows[j]) for c in costs)
                terms.append(occurs[j] * inc)
                linear.append(b * q[j] * sum(c["row_ms"] for c in costs))
                whole = sum(whole_batch(c, b) - increment(c, b) for c in costs)
                if whole:  # a batch of S alone skips the gather: P(k_S = B) · the difference
                    terms.append(q[j] ** b * whole)
            shared = entry.get("shared_ms", 0.0)
            if shared:  # paid once per block, not once per pattern: −shared · E[(m − 1)⁺]
                off = (1 - q.sum()).clamp(0.0, 1.0)  # q_∅
                terms.append(-shared * (occurs.sum() - 1 + off ** b))
        fixed = torch.tensor(self.scale * self.fixed_ms, dtype=torch.float64)
        if not terms:
            return fixed
        value = fixed.to(terms[0].device) + self.scale * torch.stack(terms).sum()
        if gradient == "exact":
            return value
        rows_part = self.scale * torch.stack(linear).sum()
        return value.detach() + (rows_part - rows_part.detach())

    def expected_fraction(self, probs: Sequence[Tensor | None],
                          gradient: str = "exact") -> Tensor:
        """:meth:`expected_ms` ÷ the static backbone's measured time."""
        return self.expected_ms(probs, gradient) / self.static_ms
