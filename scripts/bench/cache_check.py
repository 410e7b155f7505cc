"""The fused executor's per-block cache check (``fused._cache_for``): what every eval forward
pays per block before it runs anything, static backbone included.

    python scripts/bench/cache_check.py [dmnn_resnet20] [--block 3] [--calls 20000]
"""

from __future__ import annotations

import argparse
import timeit

import torch

import dmnn
from dmnn.execution import fused


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", nargs="?", default="dmnn_resnet20")
    p.add_argument("--block", type=int, default=3)
    p.add_argument("--calls", type=int, default=20000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    model = dmnn.create_model(args.model).eval()
    size = model.default_input_size
    with torch.inference_mode():
        model(torch.randn(2, model.in_chans, size, size))
    block = model.blocks[args.block]
    if fused._cache_for(block.paths) is None:
        raise SystemExit(f"error: block {args.block} of {args.model} has no fused cache")
    best = min(timeit.repeat(lambda: fused._cache_for(block.paths), number=args.calls,
                             repeat=args.repeat))
    print(f"{args.model} block {args.block}: {best / args.calls * 1e6:.1f} µs a check "
          f"(best of {args.repeat} × {args.calls} calls)")


if __name__ == "__main__":
    main()
