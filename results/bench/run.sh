#!/usr/bin/env bash
# Sparse-executor latency and memory figures (issue: real wall-clock savings). Run from the repo
# root on a quiet machine; each command prints JSON that is saved next to this script.
set -euo pipefail
out=$(dirname "$0")
dmnn bench dmnn_resnet50 --batch 1 --rate 0.5 --threads 2 --repeats 150 --json > "$out/dmnn_resnet50_b1.json"
dmnn bench dmnn_resnet50 --batch 32 --rate 0.5 --threads 2 --repeats 10 --json > "$out/dmnn_resnet50_b32.json"
dmnn bench dmnn_resnet56 --batch 1 --rate 0.5 --threads 2 --repeats 300 --json > "$out/dmnn_resnet56_b1.json"
dmnn bench dmnn_resnet56 --batch 32 --rate 0.5 --threads 2 --repeats 40 --json > "$out/dmnn_resnet56_b32.json"
python benchmarks/sparse_memory.py --model dmnn_resnet50 --batch 32 --rate 0.5 --json > "$out/memory_dmnn_resnet50_b32.json"
