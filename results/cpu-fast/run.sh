#!/usr/bin/env bash
# The cpu-fast CIFAR-10 result: static ResNet-20 and DMNN-20 (N=2) at r = 0.5 and 0.7, the same
# data, augmentation and schedule. Run from the repo root; re-running resumes unfinished runs.
# Metrics land in runs/cpu-fast/*/metrics.json; copy them here with results/cpu-fast/collect.sh.
set -euo pipefail
DATA=${DATA:-../shared/data/cifar-10-batches-py}
run() {  # run NAME ARGS...
  local out=runs/cpu-fast/$1; shift
  if [ -f "$out/metrics.json" ]; then echo "$out done"; return; fi
  if [ -f "$out/last.json" ]; then
    dmnn train --out "$out" --resume --no-progress
  else
    rm -rf "$out"
    dmnn train --preset cpu-fast --data-dir "$DATA" --out "$out" --no-progress "$@"
  fi
}
run resnet20 --model resnet20
run dmnn_resnet20_r0.5 --model dmnn_resnet20 --sub-blocks 2 --target-rate 0.5
run dmnn_resnet20_r0.7 --model dmnn_resnet20 --sub-blocks 2 --target-rate 0.7
