"""How the fused executor splits a batch with mixed gate patterns (issue #13): by pattern (each
pattern's rows through its fused stack, up to 2^N − 1 calls) against by path (each sub-block's
folded stack on its on rows, at most N calls) and ``auto`` (fewer calls), all against the folded
static backbone, in one rotated loop, forced random gates at rate r (a new pattern each round).

    python scripts/bench/mixed_split.py dmnn_resnet56 --batch 32 [--input-size 224] [--json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from dmnn.evaluation.latency import median_ms, paired_ratio, timed_round
from dmnn.execution.forcing import force_gates

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling module, however run
from pair import build_pair, pair_parser  # noqa: E402

SPLITS = ("pattern", "path", "auto")


def main() -> None:
    p = pair_parser(__doc__)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model, static, size, x = build_pair(args)

    def split(name: str, seed: int):
        def run() -> torch.Tensor:
            model.set_execution("auto", mixed_split=name)
            with force_gates(model, args.rate, seed=seed):
                return model(x)
        return run

    times: dict[str, list[float]] = {k: [] for k in ("static", *SPLITS)}
    worst = 0.0
    with torch.inference_mode():
        for i in range(args.warmup + args.repeats):
            variants = {"static": lambda: static(x)} | {s: split(s, i) for s in SPLITS}
            outs = timed_round(variants, i, times if i >= args.warmup else None)
            worst = max(worst, (outs["path"] - outs["pattern"]).abs().max().item())
    model.set_execution("auto", mixed_split="pattern")
    result = {
        "model": args.model, "batch": args.batch, "input_size": size, "rate": args.rate,
        "channels_last": args.channels_last, "threads": args.threads, "repeats": args.repeats,
        "latency_ms": {k: median_ms(v) for k, v in times.items()},
        "vs_static": {s: paired_ratio(times[s], times["static"]) for s in SPLITS},
        "path_vs_pattern": paired_ratio(times["path"], times["pattern"]),
        "max_abs_diff_path_vs_pattern": worst,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    ms = result["latency_ms"]
    fmt = "channels-last" if args.channels_last else "contiguous"
    print(f"{args.model} batch {args.batch} at {size} px ({fmt}):"
          f" static {ms['static']:.2f} ms; " + "; ".join(
              f"{s} {ms[s]:.2f} ms ({result['vs_static'][s]:.3f}× static)" for s in SPLITS)
          + f"; path ÷ pattern {result['path_vs_pattern']:.3f}")


if __name__ == "__main__":
    main()
