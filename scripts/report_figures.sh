#!/usr/bin/env bash
# The README's figures, from the committed CIFAR-10 results (metrics JSONs, bench JSONs and the
# per-sample records beside them). From the repository root:
#   bash scripts/report_figures.sh [--data-dir ../shared/data/cifar-10-batches-py]
set -euo pipefail
runs=$(ls results/cpu-fast/*.json results/compare/*.json | grep -v '\.bench_b' | grep -v '\.eval\.')
dmnn report $runs --out results/figures "$@"
