"""``dmnn profile``: a latency table of a gated model on this device, and how well it predicts.

Why: MACs do not predict time at the sizes users run (#33). The table prices what the default
executor (fused, BN folded) actually runs: the stem, the head, and for every gated block its
cost with every sub-block off (controller, shortcut and bookkeeping: ``base``) plus, for each gate
pattern p, what running p's rows adds: ``call`` once per batch in which p occurs (kernel launches,
gather and scatter set-up) and ``row`` per row, from p on 1 row and on B − 1 rows with the
other rows off; the ``points`` measured between (B/4, B/2 rows) make it piecewise linear. A
mixed batch with k_p rows of pattern p costs

    stem + head + overhead + Σ_l [ base_l + Σ_{p: k_p > 0} inc_{l,p}(k_p) ]

with inc_{l,p}(k) ≈ call_{l,p} + row_{l,p} · k (:func:`increment`)

(:func:`predict`), which is how the fused executor splits it: one stack per pattern. Patterns
are all 2^N − 1 non-empty ones for N ≤ 3; for larger N, the N single-path ones, and a pattern
costs the sum of its paths (a per-path model, less exact). Each block is timed on the input it
gets from an all-on forward. ``overhead`` is what the parts miss in a whole forward (the
network's loop, the cache effects of a chain of blocks): the measured all-on forward minus the
sum of its parts, so the table reproduces all-on by construction and the check below tests it
on other patterns. The table says how well it predicts: the predicted against the
measured forward for forced random gates at several rates (median and worst relative error),
all whole forwards (all on, each rate, the static backbone) timed in one rotated loop.
The static backbone (BN folded too) is timed in the same run, so every figure is also a ratio.
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
from ..network.latency_table import FORMAT, LatencyTable, path_patterns, pattern_key
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
          sync: Callable[[], None]) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in variants}
    for i in range(warmup + repeats):
        timed_round(variants, i, times if i >= warmup else None, sync)
    return {k: median_ms(v) for k, v in times.items()}


def _block_entry(block: GatedBlock, x: Tensor, state: Tensor | None, repeats: int, warmup: int,
                 sync: Callable[[], None]) -> dict[str, Any]:
    b, n = x.shape[0], block.num_sub_blocks
    dev = x.device
    if block.gate is None:
        ms = _time({"block": lambda: block(x, state)}, repeats, warmup, sync)
        return {"index": block.index, "num_sub_blocks": n, "gated": False,
                "controller_ms": 0.0, "base_ms": ms["block"], "patterns": {}}

    def forced(g: Tensor) -> Callable[[], Any]:
        def run() -> Any:
            block.gate_override = lambda i, batch, d: g
            try:
                return block(x, state)
            finally:
                block.gate_override = None
        return run

    variants: dict[str, Callable[[], Any]] = {
        "controller": lambda: block.gate(x, state),
        "off": forced(_fixed(b, n, (), 0, dev)),
    }
    # p on k rows, the rest off, for k from 1 to B − 1: gather and scatter as in a mixed batch
    # (all B rows of one pattern skip the gather, so they would price rows too cheaply)
    ks = row_counts(b)
    for on in patterns(n):
        for k in ks:
            variants[f"{pattern_key(on)}@{k}"] = forced(_fixed(b, n, on, k, dev))
    ms = _time(variants, repeats, warmup, sync)
    costs = {}
    for on in patterns(n):
        key = pattern_key(on)
        points = [[k, ms[f"{key}@{k}"] - ms["off"]] for k in ks]
        one, last = points[0], points[-1]
        row = 0.0 if last[0] == 1 else max(0.0, (last[1] - one[1]) / (last[0] - 1))
        costs[key] = {"call_ms": one[1] - row, "row_ms": row, "points": points}
    return {"index": block.index, "num_sub_blocks": n, "gated": True,
            "controller_ms": ms["controller"], "base_ms": ms["off"], "patterns": costs}


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
    with torch.inference_mode():
        inputs = _block_inputs(model, x)
        with force_gates(model, "on"):
            features = model.blocks[-1](*inputs[-1])[0]
        say("stem, head and the static backbone")
        parts = _time({"stem": lambda: run_stem(model.stem, x),
                       "head": lambda: model.head(features),
                       "static": lambda: static(x)}, repeats, warmup, sync)
        blocks = []
        for block, (xb, state) in zip(model.blocks, inputs, strict=True):
            say(f"block {block.index + 1}/{len(model.blocks)}")
            blocks.append(_block_entry(block, xb, state, repeats, warmup, sync))
        say("whole forwards: all on, forced random gates, the static backbone")
        on = [torch.ones(batch, b.num_sub_blocks, device=dev) for b in model.blocks]
        drawn = _random_patterns(model, x, rates, seed)
        whole = _time({"all_on": _forced_forward(model, x, on), "static": lambda: static(x),
                       **{f"r{r}": _forced_forward(model, x, p) for r, p in drawn.items()}},
                      repeats, warmup, sync)
        table: dict[str, Any] = {
            "format": FORMAT, "model": name, "model_kwargs": dict(model_kwargs or {}),
            "batch": batch, "input_size": size, "device": str(dev),
            "threads": torch.get_num_threads(), "channels_last": channels_last,
            "repeats": repeats, "warmup": warmup, "executor": "auto (fused, BN folded)",
            "enumerated_up_to": MAX_ENUMERATED,
            "stem_ms": parts["stem"], "head_ms": parts["head"], "static_ms": whole["static"],
            "blocks": blocks, "overhead_ms": 0.0, "all_on_ms": whole["all_on"],
        }
    # what the parts miss in a whole forward (the network's own loop, the cache effects of a
    # chain of blocks): the all-on forward against the sum of its parts, one more term
    table["overhead_ms"] = whole["all_on"] - predict(table, _gated_only(model, on))
    rows = []
    for rate, pattern in drawn.items():
        measured, predicted = whole[f"r{rate}"], predict(table, _gated_only(model, pattern))
        rows.append({"rate": rate, "measured_ms": measured, "predicted_ms": predicted,
                     "vs_static": measured / whole["static"],
                     "error": (predicted - measured) / measured})
    errors = [abs(r["error"]) for r in rows]
    table["check"] = {"rows": rows, "median_abs_error": statistics.median(errors),
                      "worst_abs_error": max(errors)}
    # the static backbone, timed before the blocks and again beside the whole forwards: how
    # much it moved says how far the machine's speed drifted (a shared machine, thermal limits)
    table["static_spread"] = (max(parts["static"], whole["static"])
                              / min(parts["static"], whole["static"]) - 1)
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
