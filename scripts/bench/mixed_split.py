"""How the fused executor splits a batch with mixed gate patterns (issue #13): by pattern (each
pattern's rows through its fused stack, up to 2^N − 1 calls) against by path (each sub-block's
folded stack on its on rows, at most N calls) and ``auto`` (fewer calls), all against the folded
static backbone, in one rotated loop, forced random gates at rate r (a new pattern each round).

    python scripts/bench/mixed_split.py dmnn_resnet56 --batch 32 [--input-size 224] [--json]
"""

from __future__ import annotations

import argparse
import json

import torch

from dmnn import create_model
from dmnn.evaluation.latency import median_ms, paired_ratio, static_backbone_for, timed_round
from dmnn.execution import fused
from dmnn.execution.forcing import force_gates

SPLITS = ("pattern", "path", "auto")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--rate", type=float, default=0.5)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    layout = torch.channels_last if args.channels_last else torch.contiguous_format
    model = create_model(args.model).eval().to(memory_format=layout)
    static = static_backbone_for(args.model).eval().to(memory_format=layout)
    size = args.input_size or model.default_input_size
    x = torch.randn(args.batch, model.in_chans, size, size).contiguous(memory_format=layout)

    def split(name: str, seed: int):
        def run() -> torch.Tensor:
            fused.set_mixed_split(name)
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
    fused.set_mixed_split("pattern")
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
