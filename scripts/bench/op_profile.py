"""Where a fused DMNN forward spends its time next to the static backbone's (issue #13), by op.

Why: :mod:`conv_floor` shows how fast the fused stacks themselves are; this shows what else a
DMNN forward does that the static network does not: the rows gathered per gate pattern
(``index_select``), the controllers' global average pooling (``sum``/``mean``), their tiny
linears, the pattern counts. Both networks run on the same input and layout, DMNN on one fixed
draw of forced gates at rate r; the profiler's self CPU time per op is averaged over
``--forwards`` passes and grouped into kinds. The profiler adds a few µs per op, so batch-1
breakdowns overstate the small ops; at batch 32 the split is what the kernels cost.

    python scripts/bench/op_profile.py dmnn_resnet50 --batch 32 --input-size 224
        [--channels-last] [--json]
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile

from dmnn.execution.forcing import force_gates

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling module, however run
from pair import build_pair, keep_freed_memory, pair_parser  # noqa: E402

KINDS = {
    "conv": ("aten::mkldnn_convolution", "aten::_convolution", "aten::convolution",
             "aten::conv2d", "aten::thnn_conv2d", "aten::_slow_conv2d_forward"),
    "relu": ("aten::clamp_min_", "aten::relu_", "aten::relu", "aten::clamp_min", "aten::relu6",
             "aten::hardtanh_"),
    "residual add": ("aten::add_", "aten::add"),
    "row scatter-add": ("aten::index_add_", "aten::scatter_add_", "aten::index_copy_"),
    "row gather": ("aten::index_select",),
    "pooling and reductions": ("aten::sum", "aten::mean", "aten::div_", "aten::div",
                               "aten::max_pool2d_with_indices", "aten::max_pool2d",
                               "aten::adaptive_avg_pool2d", "aten::_adaptive_avg_pool2d"),
    "linear": ("aten::addmm", "aten::linear", "aten::mm"),
}
"""Op names by kind; whatever else runs (allocations, views, argmax, bincount, nonzero, ...) is
``other``."""


def kind_of(op: str) -> str:
    return next((k for k, names in KINDS.items() if op in names), "other")


def profile_ms(fn, forwards: int) -> tuple[dict[str, float], dict[str, float], float]:
    """(self ms per forward by kind, by op, wall ms per forward under the profiler).

    The wall time less the ops' self time is what no aten op accounts for: Python, dispatch and
    the profiler's own records."""
    fn()
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for _ in range(forwards):
            fn()
        wall_ms = (time.perf_counter() - start) * 1e3 / forwards
    by_op: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        by_op[event.key] += event.self_cpu_time_total / 1e3 / forwards
    by_kind: dict[str, float] = defaultdict(float)
    for op, ms in by_op.items():
        by_kind[kind_of(op)] += ms
    return dict(by_kind), dict(by_op), wall_ms


def main() -> None:
    p = pair_parser(__doc__)
    p.add_argument("--seed", type=int, default=0, help="the forced gate draw")
    p.add_argument("--forwards", type=int, default=3, help="profiled passes (averaged)")
    args = p.parse_args()
    kept = keep_freed_memory()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, static, size, x = build_pair(args)
    with torch.inference_mode():
        with force_gates(model, args.rate, seed=args.seed):
            _, routing = model(x, return_routing=True)
        fixed = [g.float() for g in routing.gates if g is not None]
        macs_ratio = routing.macs.double().mean().item() / static.macs_table(size).full

        def dmnn(net: nn.Module = model) -> Tensor:
            with force_gates(net, fixed):
                return net(x)

        result: dict = {"model": args.model, "batch": args.batch, "input_size": size,
                        "rate": args.rate, "seed": args.seed, "threads": args.threads,
                        "channels_last": args.channels_last, "forwards": args.forwards,
                        "freed_memory_kept": kept, "macs_ratio_vs_static": macs_ratio}
        for name, fn in (("static", lambda: static(x)), ("dmnn", dmnn)):
            by_kind, by_op, wall = profile_ms(fn, args.forwards)
            by_kind["outside aten ops"] = wall - sum(by_op.values())
            result[name] = {"total_ms": wall, "by_kind_ms": by_kind,
                            "top_ops_ms": dict(sorted(by_op.items(), key=lambda kv: -kv[1])[:12])}
    static_total = result["static"]["total_ms"]
    result["share_of_static"] = {
        k: {net: result[net]["by_kind_ms"].get(k, 0.0) / static_total
            for net in ("static", "dmnn")} for k in (*KINDS, "other", "outside aten ops")}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    fmt = "channels-last" if args.channels_last else "contiguous"
    print(f"{args.model} batch {args.batch} at {size} px ({fmt}), forced r = {args.rate}: "
          f"ms per forward (share of the static total); MACs {macs_ratio:.3f}x static")
    print(f"  {'kind':<24}{'static':>18}{'DMNN':>18}")
    for k, shares in result["share_of_static"].items():
        s, d = (result[n]["by_kind_ms"].get(k, 0.0) for n in ("static", "dmnn"))
        print(f"  {k:<24}{s:>10.2f} ({shares['static']:.3f}){d:>10.2f} ({shares['dmnn']:.3f})")
    d_total = result["dmnn"]["total_ms"]
    print(f"  {'total':<24}{static_total:>10.2f} (1.000){d_total:>10.2f} "
          f"({d_total / static_total:.3f})")


if __name__ == "__main__":
    main()
