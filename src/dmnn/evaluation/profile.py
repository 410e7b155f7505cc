"""``dmnn profile``: a latency table of a gated model on this device, and how well it predicts.

Why: MACs do not predict time at the sizes users run (#33). The table prices what the default
executor (fused, BN folded) actually runs: the stem, the head, and for every gated block its
cost with every sub-block off (controller, shortcut and bookkeeping: ``base``) plus, for each gate
pattern p, what running p's rows adds: ``call`` once per batch in which p occurs (kernel launches,
gather and scatter set-up) and ``row`` per row, from p on 1 row and on B − 1 rows with the
other rows off; the ``points`` measured between (B/4, B/2 rows) make it piecewise linear.
``full`` is p on all B rows, which the executor runs without gathering (priced as inc(B), all
on looked dearer than it is, and the all-on fit below then priced every mixed batch 10-25 %
short). ``shared`` is what each pattern timed alone paid that a block pays once however many
patterns it runs (the copy of its output, the first touch of its input in cache): every
pattern on an equal share of the rows at once, against each alone, per extra pattern
(:func:`mixed_rows`; without it a mixed N = 2 batch was predicted 15-25 % long).
A mixed batch with k_p rows of pattern p, m_l patterns in block l, costs

    scale · (stem + head + Σ_l [ base_l + Σ_{p: k_p > 0} inc_{l,p}(k_p) − (m_l − 1)⁺ shared_l ])

with inc_{l,p}(k) ≈ call_{l,p} + row_{l,p} · k (:func:`increment`), full_{l,p} when k = B

(:func:`predict`), which is how the fused executor splits it: one stack per pattern. Patterns
are all 2^N − 1 non-empty ones for N ≤ 3; for larger N, the N single-path ones, and a pattern
costs the sum of its paths (a per-path model, less exact). Each block is timed inside whole
forwards, every block forced to the same pattern and row count, by hooks before and after it
(:class:`_BlockClock`: alone, a block paid another cache state than in its network).
``scale`` is what the parts miss in a whole forward (the network's loop, the cache effects of
a chain of blocks): the measured all-on forward ÷ the sum of its parts, so the table
reproduces all-on by construction and the check below tests it on other patterns. The table
says how well it predicts: the predicted against the measured forward for forced random gates
at several rates (median and worst relative error).
The static backbone (BN folded too) is timed in the same run, so every figure is also a ratio.
Every part and every whole forward is timed in one rotated loop, so a slow phase of a shared
machine slows them all alike (timed one after another, the parts and the check drifted apart).
Timing belongs here, never in unit tests.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..checks import check_int
from ..execution.forcing import force_gates
from ..network.block import GatedBlock
from ..network.dynamic_net import DynamicNet
from ..network.executor import executor
from ..network.latency_table import (
    FORMAT,
    LatencyTable,
    increment,
    path_patterns,
    pattern_key,
)
from .latency import check_bench_args, median_ms, timed_round, timing_setup

RATES = (0.25, 0.5, 0.75)
MAX_ENUMERATED = 3
"""Up to this N every gate pattern is timed; above it, each single path (a per-path model)."""


def patterns(n: int) -> list[tuple[int, ...]]:
    """The patterns a block of N sub-blocks is timed at."""
    if n > MAX_ENUMERATED:
        return [(i,) for i in range(n)]
    return path_patterns(n)


def row_counts(batch: int) -> list[int]:
    """The row counts a pattern is timed at: 1, B/4, B/2 and B − 1 (those that exist)."""
    return sorted({1, max(1, batch // 4), max(1, batch // 2), max(1, batch - 1)})


def predict(table: dict[str, Any], gates: Sequence[Tensor | None]) -> float:
    """Predicted forward milliseconds of a table (as written) for one batch's executed gates
    (:meth:`dmnn.network.latency_table.LatencyTable.predict_ms`)."""
    return LatencyTable(table).predict_ms(gates)


def _fixed(batch: int, n: int, on: Sequence[int], rows: int, device: torch.device) -> Tensor:
    g = torch.zeros(batch, n, device=device)
    if rows:
        g[:rows, list(on)] = 1.0
    return g


def _block_inputs(model: DynamicNet, x: Tensor) -> list[tuple[Tensor, Tensor | None]]:
    """Each block's input and incoming controller state in an all-on forward."""
    seen: list[tuple[Tensor, Tensor | None]] = []
    hooks = [b.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append((args[0].clone(), (args[1] if len(args) > 1
                                              else kwargs.get("state")))), with_kwargs=True)
        for b in model.blocks]
    try:
        with force_gates(model, "on"):
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _time(variants: dict[str, Callable[[], Any]], repeats: int, warmup: int,
          sync: Callable[[], None], clock: _BlockClock | None = None) -> dict[str, list[float]]:
    """Each variant's seconds over ``repeats`` rounds of one rotated loop (and, with ``clock``,
    each block's inside it). Outputs are dropped as they come."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    record = [False]

    def dropped(name: str, f: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            if clock is not None:
                clock.current = name if record[0] else None
            f()
        return run

    dropping = {k: dropped(k, f) for k, f in variants.items()}
    for i in range(warmup + repeats):
        record[0] = i >= warmup
        timed_round(dropping, i, times if record[0] else None, sync)
    return times


def _network_variants(model: DynamicNet, batch: int, device: torch.device
                      ) -> dict[str, list[Tensor]]:
    """The forced gates of every whole forward the blocks are timed in: every block off; each
    pattern p on k rows with the rest off, in every block that has p, for k from 1 to B − 1
    (gather and scatter as in a mixed batch) and on all B rows (no gather); every timed
    pattern at once on a share of the rows (:func:`mixed_rows`)."""
    ns = [b.num_sub_blocks for b in model.blocks]
    keys = {on for n in set(ns) for on in patterns(n)}
    counts = [str(k) for k in row_counts(batch)] + (["all"] if batch > 1 else [])

    def each(make: Callable[[int], Tensor]) -> list[Tensor]:
        return [make(n) for n in ns]

    variants = {"off": each(lambda n: _fixed(batch, n, (), 0, device))}
    for on in sorted(keys):
        for k in counts:
            rows = batch if k == "all" else int(k)
            variants[f"{pattern_key(on)}@{k}"] = each(
                lambda n, on=on, rows=rows: _fixed(batch, n, on if on in patterns(n) else (),
                                                   rows, device))
    if any(len(mixed_rows(batch, n)) > 1 for n in ns):  # a block that fits ``shared`` on it
        variants["mixed"] = each(lambda n: _mixed(batch, n, device))
    return variants


class _BlockClock:
    """Per-block seconds inside whole forwards (pre- and post-forward hooks on every block):
    a block timed in its network pays the cache state its neighbours leave, which a block
    timed alone does not (alone, DMNN-20's first-stage blocks ran at 3.9 or 5.5 ms by process,
    and a scale fitted on all-on carried the difference to every pattern)."""

    def __init__(self, model: DynamicNet, sync: Callable[[], None]) -> None:
        self.current: str | None = None
        self.seconds: dict[tuple[str, int], list[float]] = {}
        self._start = 0.0
        self._sync = sync
        self._hooks = [h for b in model.blocks for h in (
            b.register_forward_pre_hook(self._enter), b.register_forward_hook(self._leave))]

    def _enter(self, block: nn.Module, args: Any) -> None:
        self._sync()
        self._start = time.perf_counter()

    def _leave(self, block: nn.Module, args: Any, out: Any) -> None:
        self._sync()
        if self.current is not None:
            self.seconds.setdefault((self.current, block.index), []).append(
                time.perf_counter() - self._start)

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()


def mixed_rows(batch: int, n: int) -> list[tuple[tuple[int, ...], int]]:
    """The mixed batch a block's ``shared`` term is fitted on: each timed pattern on an equal
    share of the rows, one share off (a random batch's mix of patterns)."""
    share = max(1, batch // (len(patterns(n)) + 1))
    return [(on, share) for on in patterns(n)][: max(0, batch // share - 1)]


def _mixed(batch: int, n: int, device: torch.device) -> Tensor:
    g = torch.zeros(batch, n, device=device)
    start = 0
    for on, k in mixed_rows(batch, n):
        g[start:start + k, list(on)] = 1.0
        start += k
    return g


def _block_entry(block: GatedBlock, batch: int, ms: dict[str, float],
                 controller_ms: float) -> dict[str, Any]:
    """One block's table entry from its medians in the whole forwards (_network_variants)."""
    n = block.num_sub_blocks
    if block.gate is None:
        return {"index": block.index, "num_sub_blocks": n, "gated": False,
                "controller_ms": 0.0, "base_ms": ms["off"], "patterns": {}}
    costs = {}
    for on in patterns(n):
        key = pattern_key(on)
        points = [[k, ms[f"{key}@{k}"] - ms["off"]] for k in row_counts(batch)]
        one, last = points[0], points[-1]
        row = 0.0 if last[0] == 1 else max(0.0, (last[1] - one[1]) / (last[0] - 1))
        costs[key] = {"call_ms": one[1] - row, "row_ms": row, "points": points,
                      "full_ms": ms[f"{key}@all"] - ms["off"] if batch > 1 else points[0][1]}
    entry = {"index": block.index, "num_sub_blocks": n, "gated": True,
             "controller_ms": controller_ms, "base_ms": ms["off"], "patterns": costs}
    parts = mixed_rows(batch, n)
    if len(parts) > 1:  # each pattern timed alone paid what a block pays once a batch
        alone = sum(increment(costs[pattern_key(on)], k) for on, k in parts)
        entry["shared_ms"] = max(0.0, (alone - (ms["mixed"] - ms["off"])) / (len(parts) - 1))
    return entry


def drift(seconds: Sequence[float]) -> float:
    """How far a variant's median moved between the first and the second half of the loop: the
    machine's speed drifting (a shared machine, thermal limits) while the table was timed."""
    half = len(seconds) // 2
    if half == 0:
        return 0.0
    a, b = median_ms(seconds[:half]), median_ms(seconds[half:])
    return max(a, b) / min(a, b) - 1


def profile_model(
    name: str, *, batch: int = 32, input_size: int | None = None, device: str = "cpu",
    threads: int | None = None, channels_last: bool = False, repeats: int = 20,
    warmup: int = 3, seed: int = 0, rates: Sequence[float] = RATES,
    model_kwargs: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The latency table of registered model ``name`` (random weights: time does not depend on
    their values) with the default executor, its prediction check, and the static backbone."""
    check_bench_args(name, 0.5, batch, input_size)
    check_int("repeats", repeats, 1)
    check_int("warmup", warmup, 0)
    setup = timing_setup(name, model_kwargs, batch=batch, input_size=input_size, device=device,
                         threads=threads, channels_last=channels_last, seed=seed,
                         what="profile", outputs_alive=2)
    model, static, dev, sync, size, x = (setup.model, setup.static, setup.device, setup.sync,
                                         setup.size, setup.x)
    say = progress or (lambda _: None)
    run_stem = executor().run_folded if model.folds() else (lambda m, t: m(t))
    on = [torch.ones(batch, b.num_sub_blocks, device=dev) for b in model.blocks]
    drawn = _random_patterns(model, x, rates, seed)
    with torch.inference_mode():
        inputs = _block_inputs(model, x)
        with force_gates(model, "on"):
            features = model.blocks[-1](*inputs[-1])[0]
        # every part and every whole forward in one rotated loop: a slow phase of a shared
        # machine then slows them all alike (timed one after another under load, the parts and
        # the check drifted apart by 20-50 %); the blocks are timed inside whole forwards
        forced = _network_variants(model, batch, dev)
        variants: dict[str, Callable[[], Any]] = {
            "stem": lambda: run_stem(model.stem, x), "head": lambda: model.head(features),
            "static": lambda: static(x), "all_on": _forced_forward(model, x, on),
            **{f"r{r}": _forced_forward(model, x, p) for r, p in drawn.items()},
            **{f"net/{k}": _forced_forward(model, x, g) for k, g in forced.items()},
            **{f"controller{b.index}": (lambda b=b, xb=xb, st=st: b.gate(xb, st))
               for b, (xb, st) in zip(model.blocks, inputs, strict=True) if b.gate is not None}}
        say(f"{len(variants)} variants in one rotated loop, {warmup} + {repeats} rounds")
        clock = _BlockClock(model, sync)
        try:
            times = _time(variants, repeats, warmup, sync, clock)
        finally:
            clock.remove()
        ms = {k: median_ms(v) for k, v in times.items()}
        blocks = [_block_entry(block, batch, {k: median_ms(clock.seconds[(f"net/{k}", block.index)])
                                              for k in forced},
                               ms.get(f"controller{block.index}", 0.0))
                  for block in model.blocks]
        table: dict[str, Any] = {
            "format": FORMAT, "model": name, "model_kwargs": dict(model_kwargs or {}),
            "batch": batch, "input_size": size, "device": str(dev),
            "threads": torch.get_num_threads(), "channels_last": channels_last,
            "repeats": repeats, "warmup": warmup, "executor": "auto (fused, BN folded)",
            "enumerated_up_to": MAX_ENUMERATED,
            "stem_ms": ms["stem"], "head_ms": ms["head"], "static_ms": ms["static"],
            "blocks": blocks, "overhead_ms": 0.0, "all_on_ms": ms["all_on"],
        }
    # what the parts miss in a whole forward (the network's own loop, the cache effects of a
    # chain of blocks): the all-on forward ÷ the sum of its parts, a factor on every price (as
    # a term it moved with how fast the parts happened to run: 0.5-7 ms across three quiet
    # profiles of DMNN-20; as a factor the check's error fell in each of nine tables)
    table["scale"] = ms["all_on"] / predict(table, _gated_only(model, on))
    rows = []
    for rate, pattern in drawn.items():
        measured, predicted = ms[f"r{rate}"], predict(table, _gated_only(model, pattern))
        rows.append({"rate": rate, "measured_ms": measured, "predicted_ms": predicted,
                     "vs_static": measured / ms["static"],
                     "error": (predicted - measured) / measured})
    errors = [abs(r["error"]) for r in rows]
    table["check"] = {"rows": rows, "median_abs_error": statistics.median(errors),
                      "worst_abs_error": max(errors)}
    # the static backbone's drift between the loop's two halves: how much the machine's speed
    # moved while the table was timed
    table["static_spread"] = drift(times["static"])
    return table


def _gated_only(model: DynamicNet, gates: Sequence[Tensor]) -> list[Tensor | None]:
    return [g if b.gate is not None else None for g, b in zip(gates, model.blocks, strict=True)]


def _random_patterns(model: DynamicNet, x: Tensor, rates: Sequence[float],
                     seed: int) -> dict[float, list[Tensor]]:
    """One fixed random gate pattern per rate (every (row, sub-block) on with probability r)."""
    g = torch.Generator().manual_seed(seed + 1)
    return {rate: [(torch.rand(x.shape[0], b.num_sub_blocks, generator=g) < rate).float()
                   .to(x.device) for b in model.blocks] for rate in rates}


def _forced_forward(model: DynamicNet, x: Tensor, pattern: list[Tensor]) -> Callable[[], Tensor]:
    def run() -> Tensor:
        with force_gates(model, pattern):
            return model(x)
    return run
