"""Training-step time of a DMNN versus its static backbone on this machine (not a test).

One step = forward (``return_routing=True``) + cross-entropy + a resource term on the gates
(mean per-sample MACs ÷ all-on MACs, so the gates' straight-through gradients are exercised) +
backward + SGD step, in train mode on random data. Variants run interleaved (one step of each per
repeat) so that drifts of a shared CPU hit them alike; medians are reported.

    python scripts/bench/train_step.py --threads 2              # resnet56 vs dmnn_resnet56 (N = 2)
    python scripts/bench/train_step.py --model resnet20 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

import dmnn
from dmnn.network.dynamic_net import DynamicNet

VARIANTS = ("static", "dense", "grouped")


@dataclass
class Result:
    variant: str
    model: str
    execution: str
    median_s: float
    min_s: float
    times_s: list[float]
    ratio_to_static: float | None = None


def cpu_name() -> str:
    """The CPU model (Linux /proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build(args: argparse.Namespace, variant: str) -> DynamicNet:
    torch.manual_seed(args.seed)
    kwargs: dict = {"num_classes": args.num_classes}
    if variant == "static":
        model = dmnn.create_model(args.model, **kwargs)
    else:
        model = dmnn.create_model(
            f"dmnn_{args.model}", num_sub_blocks=args.num_sub_blocks, **kwargs
        )
        model.set_execution(variant)
    assert isinstance(model, DynamicNet)
    model.train()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def make_step(model: DynamicNet, lr: float):
    """A closure running one full training step; the optimizer is the usual SGD + momentum."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)

    def step(x: Tensor, y: Tensor) -> float:
        start = time.perf_counter()
        logits, routing = model(x, return_routing=True)
        resource = routing.macs.mean() / routing.table.full
        loss = F.cross_entropy(logits, y) + 0.1 * resource.to(logits.dtype)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    return step


def run(args: argparse.Namespace) -> list[Result]:
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}: choose from {VARIANTS}")
    models = {v: build(args, v) for v in variants}
    size = args.input_size or next(iter(models.values())).default_input_size
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, 3, size, size, generator=gen)
    y = torch.randint(0, args.num_classes, (args.batch,), generator=gen)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    steps = {v: make_step(m, args.lr) for v, m in models.items()}
    for _ in range(args.warmup):
        for step in steps.values():
            step(x, y)
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.repeats):
        for v, step in steps.items():
            times[v].append(step(x, y))
    results = []
    for v in variants:
        name = args.model if v == "static" else f"dmnn_{args.model}"
        results.append(
            Result(v, name, "-" if v == "static" else v, statistics.median(times[v]),
                   min(times[v]), times[v])
        )
    static = next((r for r in results if r.variant == "static"), None)
    if static is not None:
        for r in results:
            r.ratio_to_static = r.median_s / static.median_s
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet56", help="static backbone; DMNN is dmnn_<model>")
    p.add_argument("--num-sub-blocks", type=int, default=2, help="N of the DMNN")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--input-size", type=int, default=0, help="0: the model's default")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    p.add_argument("--repeats", type=int, default=10, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma list of variants")
    p.add_argument("--channels-last", action="store_true", help="models and input channels_last")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    results = run(args)
    env = {
        "torch": torch.__version__, "threads": torch.get_num_threads(), "batch": args.batch,
        "channels_last": args.channels_last, "repeats": args.repeats, "warmup": args.warmup,
        "machine": platform.machine(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
    }
    if args.json:
        json.dump({"env": env, "results": [asdict(r) for r in results]}, sys.stdout, indent=2)
        print()
        return
    print(f"train step, batch {args.batch}, {env['threads']} threads ({env['cpu']}), "
          f"torch {env['torch']}"
          f"{', channels_last' if args.channels_last else ''}; median of {args.repeats}")
    print(f"{'variant':<9} {'model':<22} {'median ms':>10} {'min ms':>9} {'vs static':>10}")
    for r in results:
        ratio = f"{r.ratio_to_static:.3f}x" if r.ratio_to_static is not None else "-"
        print(f"{r.variant:<9} {r.model:<22} {r.median_s * 1e3:>10.1f} {r.min_s * 1e3:>9.1f}"
              f" {ratio:>10}")
    ratios = [f"{r.variant}/static = {r.ratio_to_static:.3f}x" for r in results
              if r.variant != "static" and r.ratio_to_static is not None]
    if ratios:
        print("DMNN N={} vs static (medians): {}".format(args.num_sub_blocks, ", ".join(ratios)))


if __name__ == "__main__":
    main()
