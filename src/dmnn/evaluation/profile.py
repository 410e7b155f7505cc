"""``dmnn profile``: a latency table of a gated model on this device, and how well it predicts.

Why: MACs do not predict time at the sizes users run (#33). The table prices what the default
executor (fused, BN folded) actually runs: the stem, the head, and for every gated block its
cost with every sub-block off (controller, shortcut and bookkeeping: ``base``) plus, for each gate
pattern p, what running p's rows adds: ``call`` once per batch in which p occurs (kernel launches,
gather and scatter set-up) and ``row`` per row, from p on 1 row and on B − 1 rows with the
other rows off; the ``points`` measured between (B/4, B/2 rows) make it piecewise linear; and
``full``, p on all B rows, which the executor runs without gathering (priced as inc(B), all-on
looked dearer than it is, and the all-on fit below then priced every mixed batch
was predicted 10-25 % short); and ``shared``, what each pattern timed alone paid that a block
pays once however many patterns it runs (the copy of its output, the first touch of its input
in cache): every pattern on an equal share of the rows at once, against each alone, per extra
pattern (:func:`mixed_rows`; without it a mixed N = 2 batch was predicted 15-25 % long).
A mixed batch with k_p rows of pattern p, m_l patterns in block l, costs

    scale · (stem + head + Σ_l [ base_l + Σ_{p: k_p > 0} inc_{l,p}(k_p) − (m_l − 1)⁺ shared_l ])

with inc_{l,p}(k) ≈ call_{l,p} + row_{l,p} · k (:func:`increment`), full_{l,p} when k = B

(:func:`predict`), which is how the fused executor splits it: one stack per pattern. Patterns
are all 2^N − 1 non-empty ones for N ≤ 3; for larger N, the N single-path ones, and a pattern
costs the sum of its paths (a per-path model, less exact). Each block is timed on the input it
gets from an all-on forward. ``scale`` is what the parts miss in a whole forward (the
network's loop, the cache effects of a chain of blocks): the measured all-on forward ÷ the
sum of its parts, so the table reproduces all-on by construction and the check below tests it
on other patterns. The table says how well it predicts: the predicted against the
measured forward for forced random gates at several rates (median and worst relative error).
The static backbone (BN folded too) is timed in the same run, so every figure is also a ratio.
Every part and every whole forward is timed in one rotated loop, so a slow phase of a shared
machine slows them all alike (timed one after another, the parts and the check drifted apart).
Timing belongs here, never in unit tests.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

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
          sync: Callable[[], None]) -> dict[str, list[float]]:
    """Each variant's seconds over ``repeats`` rounds of one rotated loop. Outputs are dropped
    as they come (a loop of every block's variants would otherwise hold all of them)."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    def dropped(f: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            f()
        return run

    dropping = {k: dropped(f) for k, f in variants.items()}
    for i in range(warmup + repeats):
        timed_round(dropping, i, times if i >= warmup else None, sync)
    return times


def _forced(block: GatedBlock, x: Tensor, state: Tensor | None, g: Tensor) -> Callable[[], Any]:
    def run() -> Any:
        block.gate_override = lambda i, batch, d: g
        try:
            return block(x, state)
        finally:
            block.gate_override = None
    return run


def _block_variants(block: GatedBlock, x: Tensor, state: Tensor | None
                    ) -> dict[str, Callable[[], Any]]:
    """What one block is timed at: the controller, every sub-block off, and each pattern p on k
    rows with the rest off, for k from 1 to B − 1 (gather and scatter as in a mixed batch; all B
    rows of one pattern skip the gather, so they would price rows too cheaply)."""
    if block.gate is None:
        return {"block": lambda: block(x, state)}
    b, n, dev = x.shape[0], block.num_sub_blocks, x.device
    variants: dict[str, Callable[[], Any]] = {
        "controller": lambda: block.gate(x, state),
        "off": _forced(block, x, state, _fixed(b, n, (), 0, dev)),
    }
    for on in patterns(n):
        for k in row_counts(b):
            variants[f"{pattern_key(on)}@{k}"] = _forced(block, x, state, _fixed(b, n, on, k, dev))
        if b > 1:  # and on all B rows, which run without gather or scatter
            variants[f"{pattern_key(on)}@all"] = _forced(block, x, state, _fixed(b, n, on, b, dev))
    if len(mixed_rows(b, n)) > 1:  # several patterns at once: what they share (mixed_rows)
        variants["mixed"] = _forced(block, x, state, _mixed(b, n, dev))
    return variants


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


def _block_entry(block: GatedBlock, batch: int, ms: dict[str, float]) -> dict[str, Any]:
    """One block's table entry from the medians of its variants (:func:`_block_variants`)."""
    n = block.num_sub_blocks
    if block.gate is None:
        return {"index": block.index, "num_sub_blocks": n, "gated": False,
                "controller_ms": 0.0, "base_ms": ms["block"], "patterns": {}}
    costs = {}
    for on in patterns(n):
        key = pattern_key(on)
        points = [[k, ms[f"{key}@{k}"] - ms["off"]] for k in row_counts(batch)]
        one, last = points[0], points[-1]
        row = 0.0 if last[0] == 1 else max(0.0, (last[1] - one[1]) / (last[0] - 1))
        costs[key] = {"call_ms": one[1] - row, "row_ms": row, "points": points,
                      "full_ms": ms[f"{key}@all"] - ms["off"] if batch > 1 else points[0][1]}
    entry = {"index": block.index, "num_sub_blocks": n, "gated": True,
             "controller_ms": ms["controller"], "base_ms": ms["off"], "patterns": costs}
    if "mixed" in ms:  # each pattern timed alone paid what a block pays once a batch
        parts = mixed_rows(batch, n)
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
        # machine then slows them all alike instead of the parts timed in it (which biased the
        # check by 20-50 % when blocks were timed one after another under load)
        variants: dict[str, Callable[[], Any]] = {
            "stem": lambda: run_stem(model.stem, x), "head": lambda: model.head(features),
            "static": lambda: static(x), "all_on": _forced_forward(model, x, on),
            **{f"r{r}": _forced_forward(model, x, p) for r, p in drawn.items()}}
        for block, (xb, state) in zip(model.blocks, inputs, strict=True):
            variants.update({f"block{block.index}/{k}": f
                             for k, f in _block_variants(block, xb, state).items()})
        say(f"{len(variants)} variants in one rotated loop, {warmup} + {repeats} rounds")
        times = _time(variants, repeats, warmup, sync)
        ms = {k: median_ms(v) for k, v in times.items()}
        blocks = [_block_entry(block, batch, {k.split("/", 1)[1]: v for k, v in ms.items()
                                              if k.startswith(f"block{block.index}/")})
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
