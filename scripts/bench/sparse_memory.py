"""Peak memory of batched inference: masked dense vs the sparse executor (sparse must be ≤ dense).

CPU tensors have no allocator statistics and RSS is blurred by malloc caching, so we use the
PyTorch profiler's memory timeline (``export_memory_timeline``), which replays every tensor
allocation and free of one forward; its maximum is the peak of live tensor bytes (parameters
included, which are the same for both). The same forced gate pattern is used for both modes.

    python scripts/bench/sparse_memory.py --model dmnn_resnet50 --batch 32 --rate 0.5 [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import dmnn
from dmnn.execution.forcing import force_gates


def peak_mib(model, x: torch.Tensor, mode: str, rate: float, seed: int) -> float:
    """Peak live tensor MiB during one forward in ``mode``."""
    model.set_execution(mode)
    with torch.inference_mode(), force_gates(model, rate, seed=seed):
        model(x)  # warm-up outside the profile
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                     with_stack=True) as prof:
            model(x)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(tmp) / "timeline.json"
        prof.export_memory_timeline(str(path), device="cpu")
        _, sizes = json.loads(path.read_text())[:2]
    return max(sum(s) for s in sizes) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="dmnn_resnet50")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--input-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model = dmnn.create_model(args.model).eval()
    size = args.input_size or model.default_input_size
    x = torch.randn(args.batch, 3, size, size)
    dense = peak_mib(model, x, "dense", args.rate, args.seed)
    sparse = peak_mib(model, x, "sparse", args.rate, args.seed)
    summary = {"model": args.model, "batch": args.batch, "input_size": size, "rate": args.rate,
               "peak_mib_dense": round(dense, 1), "peak_mib_sparse": round(sparse, 1),
               "sparse_over_dense": round(sparse / dense, 3)}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{args.model} batch {args.batch} {size}px rate {args.rate}: peak live tensors "
              f"masked dense {dense:.0f} MiB, sparse {sparse:.0f} MiB "
              f"(sparse/dense {sparse / dense:.2f})")


if __name__ == "__main__":
    main()
