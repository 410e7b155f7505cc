"""Where the all-on controller overhead goes: the static twin against the all-on DMNN, and two
stand-ins that each remove part of the controller, timed interleaved in one process.

* ``twin``: the same modules with every gate removed (``without_controllers``
  in :mod:`dmnn.evaluation.latency`).
* ``all_on``: the real controllers, deciding 'on' by themselves (``decide_all_on``
  in :mod:`dmnn.evaluation.latency`).
* ``gap_only``: each controller pools its input (the paper's GAP), then returns fixed all-on gates.
* ``stub``: fixed all-on gates, no controller arithmetic: what the gated block's bookkeeping costs.

``--extra`` adds a control and two rewrites of the controller that were tried and dropped:

* ``twin_control``: the twin again; its "overhead" is the bias of the interleaving (+0.1 %).
* ``param_path``: the controllers with ``fast_inference`` off: the same arithmetic through the
  autograd-aware path on ``Parameter`` weights (what ``all_on`` ran before session 5).
* ``blas_free``: the linears as ``(W * z).sum(-1) + b`` instead of BLAS calls.

Ratios are medians of per-round paired ratios against ``twin``; every round runs the variants in
a fresh random order (seeded). A plain alternation left ``twin_control`` 0.8–1.3 % faster than
``twin`` with seven variants. On a VM whose speed drifts, run it twice and read the spread.

    python scripts/bench/controller_overhead.py --model dmnn_resnet50 --batch 1 --repeats 200
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable

import torch

import dmnn
from dmnn.evaluation.latency import decide_all_on, without_controllers
from dmnn.network.gate import Gate, GateDecision


class _Fixed(Gate):
    """Stands in for a controller: optionally pools, then hands back all-on gates."""

    def __init__(self, num_sub_blocks: int, pool: bool) -> None:
        super().__init__()
        self.num_sub_blocks, self.pool = num_sub_blocks, pool
        self._ones: dict[int, torch.Tensor] = {}

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> GateDecision:
        if self.pool:
            x.mean(dim=(2, 3))
        ones = self._ones.get(x.shape[0])
        if ones is None:
            ones = self._ones[x.shape[0]] = torch.ones(x.shape[0], self.num_sub_blocks)
        return GateDecision(gates=ones)


def _param_path(model, gates: list) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x: torch.Tensor) -> torch.Tensor:
        for gate in gates:
            gate.fast_inference = False
        try:
            return model(x)
        finally:
            for gate in gates:
                gate.fast_inference = True
    return run


class _BlasFree(Gate):
    """The controller's eval arithmetic with the linears as ``(W * z).sum(-1) + b``."""

    def __init__(self, ctrl: torch.nn.Module) -> None:
        super().__init__()
        self.num_sub_blocks = ctrl.num_sub_blocks
        self.w = ctrl.plain_weights()

    @staticmethod
    def _linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (w * x).sum(-1) + b

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> GateDecision:
        w1, b1, w2, b2, w3, b3 = self.w
        h = self._linear(x.mean(dim=(2, 3)), w1, b1).relu_()
        if w2 is not None and state is not None:
            h = h + self._linear(state, w2, b2).relu_()
        logits = self._linear(h, w3, b3).view(-1, self.num_sub_blocks, 2)
        return GateDecision(gates=logits.argmax(dim=-1).to(logits.dtype), state=h)


def _with_gates(model, gates: list) -> Callable[[torch.Tensor], torch.Tensor]:
    def run(x: torch.Tensor) -> torch.Tensor:
        saved = [b.gate for b in model.blocks]
        for block, gate in zip(model.blocks, gates, strict=True):
            block.gate = gate
        try:
            return model(x)
        finally:
            for block, gate in zip(model.blocks, saved, strict=True):
                block.gate = gate
    return run


def measure(
    model_name: str, batch: int, threads: int, repeats: int, size: int | None, clock: str = "wall",
    extra: bool = False,
) -> dict:
    if clock == "thread" and threads != 1:
        raise SystemExit("--clock thread counts the calling thread only: use it with --threads 1")
    timer = time.perf_counter if clock == "wall" else time.thread_time
    torch.set_num_threads(threads)
    model = dmnn.create_model(model_name).eval()
    if not decide_all_on(model):
        raise SystemExit(f"{model_name}: only DMNN controllers can be made to decide all-on")
    size = size or model.default_input_size
    x = torch.randn(batch, model.in_chans, size, size)
    gated = [b.gate for b in model.blocks]

    def stand_ins(pool: bool) -> list:
        return [None if g is None else _Fixed(g.num_sub_blocks, pool) for g in gated]

    def twin(inp: torch.Tensor) -> torch.Tensor:
        with without_controllers(model):
            return model(inp)

    variants = {"twin": twin, "all_on": model, "gap_only": _with_gates(model, stand_ins(True)),
                "stub": _with_gates(model, stand_ins(False))}
    if extra:
        variants["twin_control"] = lambda inp: twin(inp)
        variants["param_path"] = _param_path(model, [g for g in gated if g is not None])
        variants["blas_free"] = _with_gates(
            model, [None if g is None else _BlasFree(g) for g in gated])
    times: dict[str, list[float]] = {k: [] for k in variants}
    warmup = 3
    rng = random.Random(0)  # a fresh order every round: no variant keeps a favoured position
    with torch.inference_mode():
        ref = twin(x)
        for name, fn in variants.items():
            if not torch.allclose(fn(x), ref, atol=1e-4):
                raise RuntimeError(f"{name} does not compute the twin's output")
        for i in range(warmup + repeats):
            order = rng.sample(list(variants), len(variants))
            for name in order:
                start = timer()
                variants[name](x)
                elapsed = timer() - start
                if i >= warmup:
                    times[name].append(elapsed)
    out = {"model": model_name, "batch": batch, "threads": threads, "repeats": repeats,
           "input_size": size, "clock": clock}
    for name in variants:
        out[f"{name}_ms"] = statistics.median(times[name]) * 1e3
        if name != "twin":
            paired = [a / b for a, b in zip(times[name], times["twin"], strict=True)]
            out[f"{name}_overhead"] = statistics.median(paired) - 1.0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="dmnn_resnet50")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--input-size", type=int, default=None)
    ap.add_argument("--clock", choices=("wall", "thread"), default="wall",
                    help="thread: CPU time of the calling thread (with --threads 1), which the "
                         "VM's stolen time does not inflate")
    ap.add_argument("--extra", action="store_true",
                    help="also time twin_control, param_path and blas_free (see the docstring)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res = measure(args.model, args.batch, args.threads, args.repeats, args.input_size,
                  args.clock, args.extra)
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"{res['model']} batch {res['batch']}, {res['threads']} threads, "
          f"{res['repeats']} rounds, {res['clock']} clock")
    for name in [k.removesuffix("_ms") for k in res if k.endswith("_ms")]:
        extra = f"  {res[name + '_overhead']:+.1%} vs twin" if name != "twin" else ""
        print(f"  {name:12s} {res[name + '_ms']:9.2f} ms{extra}")


if __name__ == "__main__":
    main()
