"""Copy finished runs' metrics into results/ and print the README table.

    python results/collect.py runs/cpu-fast results/cpu-fast

For every ``RUN/metrics.json`` under the first folder: writes ``<dest>/<run>.json`` (the
metrics plus the exact command from the run's config) and prints one markdown row with top-1,
MACs mean ± std, MACs ratio, parameters and training hours.
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
        rows.append(
            f"| {run.name} | {metrics['model']} | {rate} "
            f"| {100 * metrics['top1']:.2f} | {metrics['macs_mean'] / 1e6:.1f} ± "
            f"{metrics['macs_std'] / 1e6:.1f} M | {metrics['macs_ratio']:.3f} | "
            f"{metrics['params'] / 1e6:.3f} M | {metrics['train_seconds'] / 3600:.2f} |"
        )
    print("| run | model | r | top-1 % | MACs (mean ± std) | MACs ratio | params | hours |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main(*sys.argv[1:3])
