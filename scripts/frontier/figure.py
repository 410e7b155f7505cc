"""Top-1 against MACs (÷ the full static ResNet-20's) for metrics JSONs or run folders, static
runs joined as the frontier (#16: `results/frontier/figures/frontier_full.png`).

    python scripts/frontier/figure.py OUT.png RUN...
"""

from __future__ import annotations

import sys
from pathlib import Path

from dmnn.evaluation import figures
from dmnn.evaluation.runs import read_run

if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: figure.py OUT.png RUN...")
    runs = [read_run(p) for p in sys.argv[2:]]
    cost = {r.name: r.metrics["macs_mean"] / r.static_macs() for r in runs}
    figures.accuracy_against(runs, cost, "MACs ÷ ResNet-20 (counted)", Path(sys.argv[1]))
