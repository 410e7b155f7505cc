"""Run by tests/test_distributed.py under ``torchrun --nproc-per-node 2``: one (and several)
optimiser steps of a static and of a DMNN model on 2 × B/2 rows with --sync-bn, against one
process on all B rows (computed on every rank from the same data). Writes OUT/rank<k>.json."""

from __future__ import annotations

import contextlib
import copy
import json
import sys
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from dmnn import create_model
from dmnn.distributed import convert_sync_batchnorm, setup
from dmnn.network.gate import set_gate_noise
from dmnn.registry import method_of
from dmnn.train.config import TrainConfig


def max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa)


def run(name: str, ctx, steps: int, lockstep: bool = True) -> dict:
    torch.manual_seed(0)
    kwargs = {"num_classes": 10, "in_chans": 3}
    if name.startswith("dmnn"):
        kwargs.update(num_sub_blocks=2, num_categories=3, gate_bias=0.3)
    ref = create_model(name, **kwargs)
    guards = {"path_balance": 0.25, "dual_step": 0.5} if name.startswith("dmnn") else {}
    cfg = TrainConfig.from_dict({"model": name, **guards})
    ddp_model = convert_sync_batchnorm(copy.deepcopy(ref), ctx.device)
    ddp = DistributedDataParallel(ddp_model)
    models = {"ref": ref, "ddp": ddp_model}
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for k, m in models.items()}
    losses = {k: method_of(name).build_loss(cfg, 100) for k in models}
    for m in models.values():
        set_gate_noise(m, 0.0)  # deterministic gates: the two runs must take the same ones
        m.train()
    g = torch.Generator().manual_seed(1)
    duals = []
    half = 8
    for _ in range(steps):
        x = torch.randn(2 * half, 3, 16, 16, generator=g)
        y = torch.randint(0, 10, (2 * half,), generator=g)
        c = torch.randint(0, 3, (2 * half,), generator=g)
        # one process, every row
        logits, routing = ref(x, return_routing=True)
        out = losses["ref"](logits, routing, y, c)
        opts["ref"].zero_grad()
        out.total.backward()
        opts["ref"].step()
        # this rank's half, statistics over both halves
        rows = slice(ctx.rank * half, (ctx.rank + 1) * half)
        with ctx.activate() if lockstep else contextlib.nullcontext():
            logits, routing = ddp(x[rows], return_routing=True)
            out_d = losses["ddp"](logits, routing, y[rows], c[rows])
        opts["ddp"].zero_grad()
        out_d.total.backward()
        opts["ddp"].step()
        duals.append(losses["ddp"].state_dict().get("dual", 0.0))
        loss_gap = abs(out.total.item() - out_d.total.item())
    return {"weights": max_diff(ref, ddp_model), "loss_gap": loss_gap,
            "dual": duals, "dual_ref": losses["ref"].state_dict().get("dual", 0.0)}


def main() -> None:
    out = Path(sys.argv[1])
    ctx, _ = setup(torch.device("cpu"))
    assert ctx is not None, "run me under torchrun"
    result = {"static_1": run("resnet20", ctx, 1), "dmnn_1": run("dmnn_resnet20", ctx, 1),
              "dmnn_5": run("dmnn_resnet20", ctx, 5),
              # the control: local statistics (what plain DDP would do) do not match
              "dmnn_local": run("dmnn_resnet20", ctx, 1, lockstep=False)}
    (out / f"rank{ctx.rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
