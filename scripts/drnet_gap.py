"""How far a DRNet checkpoint's hard test routing is from its soft training mix, and what closes it.

Prints, on the first N test images: top-1 and MACs ratio under eqn 11 as trained; how many
images each router leaves undecided (0.1 < r < 0.9); top-1 after re-estimating BN under hard
routing; top-1 after a few SGD steps of hard-routing fine-tuning with frozen routers (§3.4).

    python scripts/drnet_gap.py RUN/last.safetensors \
        --data-dir ../shared/data/cifar-10-batches-py
"""

from __future__ import annotations

import argparse
import math
from itertools import islice

import torch
import torch.nn.functional as F

from dmnn.evaluation.metrics import collect, summarize_record
from dmnn.evaluation.restore import load_for_eval
from dmnn.methods.drnet import DRNetRouter, set_hard_routing
from dmnn.train.checkpoint import read_checkpoint


def evaluate(model, data, n_max: int) -> tuple[float, float]:
    """Top-1 and MACs ratio by the evaluator's own definitions, on the first test batches."""
    first = islice(data.test, math.ceil(n_max / data.test.batch_size))
    with torch.no_grad():
        record = collect(model, first, torch.device("cpu"))
    summary = summarize_record(record, model, data.input_size, data.category_map.names)
    return summary["top1"], summary["macs_ratio"]


def undecided(model, data) -> list[float]:
    routes: dict[int, list[torch.Tensor]] = {}
    routers = [m for m in model.modules() if isinstance(m, DRNetRouter)]
    hooks = [m.register_forward_hook(lambda m, i, o, k=k: routes.setdefault(k, []).append(
        o.extras["route"].flatten())) for k, m in enumerate(routers)]
    model.eval()
    with torch.no_grad():
        model(next(iter(data.test)).images)
    for h in hooks:
        h.remove()
    return [((r > 0.1) & (r < 0.9)).float().mean().item()
            for r in (torch.cat(routes[k]) for k in range(len(routers)))]


def report(tag: str, model, data, n_max: int) -> None:
    top1, ratio = evaluate(model, data, n_max)
    print(f"{tag:<22} top-1 {top1:.4f}  MACs ratio {ratio:.3f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--test-images", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lr", type=float, default=0.01)
    args = ap.parse_args()
    torch.manual_seed(0)
    meta, tensors = read_checkpoint(args.checkpoint)
    model, data, _ = load_for_eval(meta, tensors, args.data_dir, "cpu", args.checkpoint)
    report("as trained (eqn 11):", model, data, args.test_images)
    print("undecided share per router:", " ".join(f"{u:.2f}" for u in undecided(model, data)))

    set_hard_routing(model, True)
    model.train()
    for m in model.modules():  # BN re-estimated under hard routing, weights untouched
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        for k, b in enumerate(data.train):
            model(b.images)
            if k >= 30:
                break
    report("BN re-estimated:", model, data, args.test_images)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.1
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=args.lr,
                          momentum=0.9)
    model.train()
    for step, b in enumerate(data.train, 1):
        loss = F.cross_entropy(model(b.images), b.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= args.steps:
            break
    report(f"after {args.steps} hard steps:", model, data, args.test_images)


if __name__ == "__main__":
    main()
