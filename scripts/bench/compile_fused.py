"""torch.compile on the fused executor, per gate pattern (issue #13, item 6).

The per-block decision (which pattern each row has) stays in Python; what a compiler can see is
one pattern's fused stack: folded convs and activations on a fixed-shape input. This times, for
DMNN-50 blocks at 224 px, the eager stack against ``torch.compile(stack)`` (inductor) at batch 1
and 32, interleaved and paired after warm-up, and reports the compile time. The default
stays whichever is faster.

    python scripts/bench/compile_fused.py --threads 2 [--blocks 0 7] [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from dmnn import create_model
from dmnn.evaluation.latency import median_ms, paired_ratio, timed_round
from dmnn.execution import fused


def block_inputs(model, batch: int) -> list[torch.Tensor]:
    """The input of every block for a random batch (eval, all on)."""
    seen: list[torch.Tensor] = []
    hooks = [b.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
             for b in model.blocks]
    with torch.inference_mode():
        model(torch.randn(batch, 3, 224, 224))
    for h in hooks:
        h.remove()
    return seen


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--blocks", type=int, nargs="+", default=[0, 7])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = create_model("dmnn_resnet50").eval()
    rows = []
    for batch in args.batches:
        inputs = block_inputs(model, batch)
        for index in args.blocks:
            paths = model.blocks[index].paths
            cache = fused._cache_for(paths)  # noqa: SLF001
            for pattern in ((0,), (0, 1)):
                stack = cache.get(pattern)
                x = inputs[index]
                with torch.inference_mode():
                    compiled = torch.compile(lambda t, s=stack: s(t), dynamic=False)
                    start = time.perf_counter()
                    compiled(x)
                    compile_s = time.perf_counter() - start
                    repeats = 50 if batch == 1 else 8
                    times: dict[str, list[float]] = {"eager": [], "compiled": []}
                    variants = {"eager": lambda s=stack, t=x: s(t),
                                "compiled": lambda c=compiled, t=x: c(t)}
                    for i in range(2 + repeats):  # interleaved, rotated, paired
                        outs = timed_round(variants, i, times if i >= 2 else None)
                    diff = (outs["eager"] - outs["compiled"]).abs().max().item()
                rows.append({"batch": batch, "block": index, "pattern": list(pattern),
                             "eager_ms": median_ms(times["eager"]),
                             "compiled_ms": median_ms(times["compiled"]),
                             "ratio": paired_ratio(times["compiled"], times["eager"]),
                             "compile_s": compile_s, "max_abs_diff": diff})
    if args.json:
        print(json.dumps({"threads": args.threads, "rows": rows}, indent=1))
        return
    for r in rows:
        print(f"batch {r['batch']:>2} block {r['block']:>2} pattern {r['pattern']}: eager "
              f"{r['eager_ms']:.2f} ms, compiled {r['compiled_ms']:.2f} ms (x{r['ratio']:.3f}, "
              f"compile {r['compile_s']:.0f} s)")


if __name__ == "__main__":
    main()
