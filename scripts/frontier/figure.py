"""Top-1 against MACs (÷ the full static ResNet-20's) for metrics JSONs or run folders, static
runs joined as the frontier (#16: `results/frontier/figures/frontier_full.png`); with
``--latency-batch B [B ...]`` also top-1 against latency ÷ the static backbone at each batch B
(``OUT_latency_bB.png``): each run's paired ratio from its ``NAME.bench_bB.json``
(``dmnn bench --checkpoint``), the backbone itself at 1; runs without a bench, or with one from
before the fused executor (timed against an unfolded static network), are left out. Each run is
shown as today's default gate calibration leaves it, as in the table (``table.as_today``).

    python scripts/frontier/figure.py OUT.png RUN... [--latency-batch 32 1]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from table import as_today  # this folder's table script: the figure shows what the table shows

from dmnn.evaluation import figures
from dmnn.evaluation.runs import read_run


def reference(run) -> bool:
    """The full-width backbone itself: the latency every bench ratio is against (a width-scaled
    backbone is another network, placed only by its own bench)."""
    return run.is_backbone and float(run.config.get("width_mult") or 1.0) == 1.0


def folded(bench: dict | None) -> bool:
    """A bench of today's eval (fused, against the BN-folded static network)."""
    return bench is not None and "static_unfolded" in bench.get("latency_ms", {})


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("runs", nargs="+")
    p.add_argument("--latency-batch", type=int, nargs="+", default=[])
    args = p.parse_args()
    runs = [read_run(r) for r in args.runs]
    for r in runs:
        r.metrics = as_today(r.metrics, r.config)[0]
    cost = {r.name: r.metrics["macs_mean"] / r.static_macs() for r in runs}
    figures.accuracy_against(runs, cost, "MACs ÷ ResNet-20 (counted)", args.out)
    for b in args.latency_batch:
        latency = {r.name: 1.0 if reference(r) else r.bench[b]["latency_ratio_vs_static"]
                   for r in runs if reference(r) or folded(r.bench.get(b))}
        out = args.out.with_name(f"{args.out.stem}_latency_b{b}{args.out.suffix}")
        figures.accuracy_against(runs, latency, f"latency ÷ ResNet-20 at batch {b} (paired, "
                                 "this CPU)", out)
        print(out)
