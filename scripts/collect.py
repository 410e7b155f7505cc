"""Copy finished runs' metrics into results/ and print the README table.

    python scripts/collect.py runs/cpu-fast results/cpu-fast

For every ``RUN/metrics.json`` under the first folder: writes ``<dest>/<run>.json`` (the
metrics plus the run's resolved config) and prints one markdown row with top-1, MACs mean ± std,
MACs ratio, parameters, top-1 and ratio before gate calibration (where it ran), training
hours and, where ``scripts/bench_runs.sh`` left
``<dest>/<run>.bench_b{1,32}.json``, the measured latency ÷ static backbone at batch 1 and 32.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def main(src: str, dest: str) -> None:
    rows = []
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    for metrics_path in sorted(Path(src).glob("*/metrics.json")):
        run = metrics_path.parent
        metrics = json.loads(metrics_path.read_text())
        config = yaml.safe_load((run / "config.yaml").read_text())
        metrics["config"] = config
        (out / f"{run.name}.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        rate = config.get("target_rate") if metrics["macs_ratio"] < 1 else "–"
        latency = []
        for batch in (1, 32):
            bench = out / f"{run.name}.bench_b{batch}.json"
            ratio = json.loads(bench.read_text())["latency_ratio_vs_static"] if bench.is_file() \
                else None
            latency.append("–" if ratio is None else f"{ratio:.2f}")
        cal = metrics.get("calibration")
        before = "–" if not cal else (f"{100 * cal['uncalibrated']['top1']:.2f} / "
                                      f"{cal['uncalibrated']['macs_ratio']:.3f}")
        rows.append(
            f"| {run.name} | {metrics['model']} | {rate} "
            f"| {100 * metrics['top1']:.2f} | {metrics['macs_mean'] / 1e6:.1f} ± "
            f"{metrics['macs_std'] / 1e6:.1f} M | {metrics['macs_ratio']:.3f} | "
            f"{metrics['params'] / 1e6:.3f} M | {before} | {latency[0]} | {latency[1]} "
            f"| {metrics['train_seconds'] / 3600:.2f} |"
        )
    print("| run | model | r | top-1 % | MACs (mean ± std) | MACs ratio | params "
          "| before calibration: top-1 % / ratio | latency b1 ÷ static | latency b32 ÷ static "
          "| hours |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main(*sys.argv[1:3])
