"""LC-Net at batch > 1: what the union-of-active-channels strategy saves, measured.

At batch 1 LC-Net slices each conv to the sample's own active channels (exact). In a batch the
executor slices to the *union* of the rows' active channels (one conv per layer; inactive
channels of a row still get its zero salience). Whether that saves anything depends on how much
the rows' channel choices overlap, so this script forces every block on and draws channel
saliences per sample at a keep fraction p, either *shared* (one random channel set for the whole
batch: union = per-sample) or *independent* (each row its own set: the union of 32 rows is
nearly every channel), and times, interleaved, in one process:

* masked dense (every channel computed, then scaled),
* union slicing (the executor's batched strategy),
* per-sample slicing (a Python loop over rows at batch 1: exact MACs, B small convs per layer).

    python scripts/bench/lcnet_union.py --model lcnet_resnet56 --batch 32 --threads 2 [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

import dmnn
from dmnn.evaluation.latency import paired_ratio, timed_round


class ForcedChannels:
    """Every block on; channel saliences 1 for a random ``keep`` fraction, else 0. ``row`` set to
    i serves batch-1 calls with row i's pattern (the per-sample loop)."""

    def __init__(self, model, keep: float, batch: int, shared: bool, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.row: int | None = None
        for block in model.blocks:
            rows = 1 if shared else batch
            pattern = (torch.rand(rows, block.gate.channels, generator=gen) < keep).float()
            block.gate.saliences = self.saliences_for(pattern.expand(batch, -1).contiguous())

    def saliences_for(self, pattern: torch.Tensor):
        def saliences(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            rows = pattern if self.row is None else pattern[self.row:self.row + 1]
            return torch.ones(x.shape[0], 1), rows
        return saliences

    def per_sample(self, model, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for i in range(x.shape[0]):
            self.row = i
            outs.append(model(x[i:i + 1]))
        self.row = None
        return torch.cat(outs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lcnet_resnet56")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--keep", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not dmnn.registry.model_method(args.model) == "lcnet":
        raise SystemExit(f"error: --model must be an lcnet_* model, got {args.model!r}")
    torch.set_num_threads(args.threads)
    model = dmnn.create_model(args.model).eval()
    size = model.default_input_size
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, model.in_chans, size, size, generator=gen)
    results = []
    with torch.inference_mode():
        for shared in (True, False):
            for keep in args.keep:
                forced = ForcedChannels(model, keep, args.batch, shared, seed=1)
                _, routing = model(x, return_routing=True)
                macs_ratio = routing.macs.mean().item() / model.macs_table(size).full

                def run(mode: str):
                    model.set_execution(mode)
                    return model(x)

                def one_by_one(forced=forced):
                    model.set_execution("sparse")
                    return forced.per_sample(model, x)

                variants = {"dense": lambda: run("dense"), "union": lambda: run("sparse"),
                            "per_sample": one_by_one}
                times = {k: [] for k in variants}
                for i in range(args.repeats + 1):  # round 0 is the warm-up
                    outs = timed_round(variants, i, times if i else None)
                diff = max((outs[k] - outs["dense"]).abs().max().item() for k in outs)
                results.append({
                    "pattern": "shared" if shared else "independent", "keep": keep,
                    "macs_ratio": macs_ratio,
                    "ms": {k: statistics.median(v) * 1e3 for k, v in times.items()},
                    "union_vs_dense": paired_ratio(times["union"], times["dense"]),
                    "per_sample_vs_dense": paired_ratio(times["per_sample"], times["dense"]),
                    "max_abs_diff": diff,
                })
    model.set_execution("auto")
    if args.json:
        print(json.dumps({"model": args.model, "batch": args.batch, "threads": args.threads,
                          "results": results}, indent=2))
        return
    print(f"{args.model} batch {args.batch}, {args.threads} threads, median of {args.repeats}")
    print("pattern      keep  MACs ratio  union÷dense  per-sample÷dense  max|diff|")
    for r in results:
        print(f"{r['pattern']:12s} {r['keep']:.2f}  {r['macs_ratio']:.3f}       "
              f"{r['union_vs_dense']:.3f}        {r['per_sample_vs_dense']:.3f}            "
              f"{r['max_abs_diff']:.1e}")


if __name__ == "__main__":
    main()
