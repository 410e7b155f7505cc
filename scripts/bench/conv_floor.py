"""The kernel floor of the fused executor (issue #13): how fast a gated network could be with no
executor overhead at all, against the static backbone's blocks on the same input.

Why: #13's latency goals ask DMNN at MACs ratio m to take about m × the static network's time.
This separates what the executor adds (gathers, scatters, pattern counts, controllers) from what
the convolution kernels themselves cost at the widths and row counts the gates hand them. Per
residual block, on the block inputs and forced gates of one real forward pass (rate r, seeded):

* ``floor_pattern``: each gate pattern's folded, fused stack (what the fused executor runs) timed
  alone on its rows, already gathered; the sum over patterns;
* ``floor_path``: each sub-block's folded stack alone on the rows where it is on (the ``path``
  split set by ``model.set_execution("auto", mixed_split=...)``);
* ``static``: the static backbone's folded block stack on its whole batch.

Shortcuts, stems and heads are left out of both sides (they are the same layers). The script
also times both whole networks, paired, on the same fixed gates: ``measured`` − ``floor`` is
the executor's and the controllers' share.

    python scripts/bench/conv_floor.py dmnn_resnet56 --batch 32 [--input-size 224] [--seeds S]
        [--channels-last] [--json]
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from dmnn.evaluation.latency import median_ms, paired_ratio, timed_round
from dmnn.execution import fused
from dmnn.execution.forcing import force_gates
from dmnn.execution.sparse import gather

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling module, however run
from pair import build_pair, keep_freed_memory, pair_parser  # noqa: E402


def block_inputs(model: nn.Module, x: Tensor) -> list[Tensor]:
    """The input of every block in one forward pass (forward pre-hooks on the blocks, which the
    fused executor ignores: it checks the paths' layers for hooks)."""
    seen: list[Tensor] = []
    handles = [b.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
               for b in model.blocks]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def median_call_ms(fn: Callable[[], Tensor], repeats: int) -> float:
    fn()  # warm-up: builds the folded stack and oneDNN's primitive for this shape
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return median_ms(samples)


def stack_ms(block: nn.Module, on: tuple[int, ...], x: Tensor, repeats: int) -> float:
    cache = fused._cache_for(block.paths)
    if cache is None:
        raise SystemExit(f"error: block {block.index} cannot be fused; no floor to measure")
    stack = cache.get(on)
    if stack is None:
        raise SystemExit(f"error: block {block.index} has no fused stack for paths {on}")
    return median_call_ms(lambda: stack(x), repeats)


def floors(model: nn.Module, inputs: list[Tensor], gates: list[Tensor | None],
           repeats: int) -> tuple[float, float]:
    """(pattern floor, path floor) in ms: the sums over blocks of their stacks' times."""
    pattern = path = 0.0
    for block, x, g in zip(model.blocks, inputs, gates, strict=True):
        n = block.num_sub_blocks
        if g is None:
            t = stack_ms(block, tuple(range(n)), x, repeats)
            pattern, path = pattern + t, path + t
            continue
        bits = (g > 0.5).to(torch.int64)
        codes = (bits * (1 << torch.arange(n))).sum(dim=1)
        for code in range(1, 1 << n):
            rows = (codes == code).nonzero().squeeze(1)
            if len(rows):
                on = tuple(i for i in range(n) if code >> i & 1)
                pattern += stack_ms(block, on, gather(x, rows), repeats)
        for i in range(n):
            rows = bits[:, i].nonzero().squeeze(1)
            if len(rows):
                path += stack_ms(block, (i,), gather(x, rows), repeats)
    return pattern, path


def branch_macs(table, gates: list[Tensor | None]) -> float:
    """Mean MACs per sample of the residual branches alone (gated sub-blocks by their gates)."""
    total = 0.0
    for g, cost in zip(gates, table.paths, strict=True):
        c = torch.tensor(cost, dtype=torch.float64)
        total += float(c.sum()) if g is None else float((g.double() * c).sum(dim=1).mean())
    return total


def main() -> None:
    p = pair_parser(__doc__)
    p.add_argument("--seeds", type=int, default=1,
                   help="forced gate draws (seeds 0..S-1); their times and MACs are summed")
    p.add_argument("--repeats", type=int, default=20, help="timings per stack (median)")
    p.add_argument("--rounds", type=int, default=20, help="paired whole-network rounds a seed")
    p.add_argument("--default-malloc", action="store_true",
                   help="leave glibc's allocator as it is (page faults included)")
    args = p.parse_args()
    kept = False if args.default_malloc else keep_freed_memory()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, static, size, x = build_pair(args)
    table, static_table = model.macs_table(size), static.macs_table(size)
    ms = dict.fromkeys(("static", "floor_pattern", "floor_path"), 0.0)
    macs = dict.fromkeys(("dmnn", "static", "dmnn_branches", "static_branches"), 0.0)
    times: dict[str, list[float]] = {"static": [], "dmnn": []}
    with torch.inference_mode():
        static_ms, _ = floors(static, block_inputs(static, x), [None] * len(static.blocks),
                              args.repeats)
        for seed in range(args.seeds):
            with force_gates(model, args.rate, seed=seed):
                _, routing = model(x, return_routing=True)
            gates = [None if g is None else g.float() for g in routing.gates]
            fixed = [g for g in gates if g is not None]
            with force_gates(model, fixed):
                pattern, path = floors(model, block_inputs(model, x), gates, args.repeats)
            ms["static"] += static_ms
            ms["floor_pattern"] += pattern
            ms["floor_path"] += path
            macs["dmnn"] += routing.macs.double().mean().item()
            macs["static"] += static_table.full
            macs["dmnn_branches"] += branch_macs(table, gates)
            macs["static_branches"] += branch_macs(static_table, [None] * len(static.blocks))

            def dmnn(fixed: list[Tensor] = fixed) -> Tensor:
                with force_gates(model, fixed):
                    return model(x)

            for i in range(2 + args.rounds):
                timed_round({"static": lambda: static(x), "dmnn": dmnn}, i,
                            times if i >= 2 else None)
    branch_ratio = macs["dmnn_branches"] / macs["static_branches"]
    macs_ratio = macs["dmnn"] / macs["static"]
    measured = paired_ratio(times["dmnn"], times["static"])
    result = {
        "model": args.model, "batch": args.batch, "input_size": size, "rate": args.rate,
        "seeds": args.seeds, "channels_last": args.channels_last, "threads": args.threads,
        "repeats": args.repeats, "rounds": args.rounds, "freed_memory_kept": kept,
        "branches_ms": ms,
        "branch_macs_ratio": branch_ratio,
        "floor_pattern_vs_static": ms["floor_pattern"] / ms["static"],
        "floor_path_vs_static": ms["floor_path"] / ms["static"],
        "floor_pattern_over_macs": ms["floor_pattern"] / ms["static"] / branch_ratio,
        "network_ms": {k: median_ms(v) for k, v in times.items()},
        "measured_vs_static": measured,
        "macs_ratio_vs_static": macs_ratio,
        "measured_over_macs": measured / macs_ratio,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    fmt = "channels-last" if args.channels_last else "contiguous"
    print(f"{args.model} batch {args.batch} at {size} px ({fmt}), forced r = {args.rate}, "
          f"{args.seeds} draw(s):")
    print(f"  residual branches alone (MACs {branch_ratio:.3f}x static): static "
          f"{ms['static']:.2f} ms, pattern stacks {ms['floor_pattern']:.2f} ms "
          f"({result['floor_pattern_vs_static']:.3f}x, quotient "
          f"{result['floor_pattern_over_macs']:.3f}), path stacks {ms['floor_path']:.2f} ms "
          f"({result['floor_path_vs_static']:.3f}x)")
    net = result["network_ms"]
    print(f"  whole networks (MACs {macs_ratio:.3f}x static): static {net['static']:.2f} ms, "
          f"DMNN {net['dmnn']:.2f} ms ({measured:.3f}x paired, quotient "
          f"{result['measured_over_macs']:.3f})")


if __name__ == "__main__":
    main()
