#!/usr/bin/env bash
# Sparse-executor latency and memory figures (issue: real wall-clock savings). Run from the repo
# root on a quiet machine; each command prints JSON that is saved next to this script.
set -euo pipefail
out=results/bench
save() { local f=$out/$1; shift; "$@" > "$f.tmp"; mv "$f.tmp" "$f"; echo "$f"; }
save dmnn_resnet50_b1.json dmnn bench dmnn_resnet50 --batch 1 --rate 0.5 --threads 2 --repeats 150 --json
save dmnn_resnet50_b1_t1.json dmnn bench dmnn_resnet50 --batch 1 --rate 0.5 --threads 1 --repeats 60 --json
save dmnn_resnet50_b32.json dmnn bench dmnn_resnet50 --batch 32 --rate 0.5 --threads 2 --repeats 6 --json
save dmnn_resnet56_b1.json dmnn bench dmnn_resnet56 --batch 1 --rate 0.5 --threads 2 --repeats 300 --json
save dmnn_resnet56_b32.json dmnn bench dmnn_resnet56 --batch 32 --rate 0.5 --threads 2 --repeats 40 --json
save memory_dmnn_resnet50_b32.json python scripts/bench/sparse_memory.py --model dmnn_resnet50 --batch 32 --rate 0.5 --json
save lcnet_union_resnet56_b32.json python scripts/bench/lcnet_union.py --model lcnet_resnet56 --batch 32 --threads 2 --repeats 15 --json
