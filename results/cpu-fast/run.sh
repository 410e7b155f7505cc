#!/usr/bin/env bash
# The cpu-fast CIFAR-10 result: static ResNet-20 and DMNN-20 (N=2) at r = 0.5 and 0.7, the same
# data, augmentation and schedule. Run from the repo root; re-running resumes unfinished runs
# from their last finished epoch. RUNS (default: runs) is where the run folders go: point it
# outside the work tree to keep checkpoints across sessions. Then
#   python results/collect.py "$RUNS/cpu-fast" results/cpu-fast
# copies each metrics.json here and prints the README table.
set -euo pipefail
DATA=${DATA:-../shared/data/cifar-10-batches-py}
RUNS=${RUNS:-runs}
run() {  # run NAME ARGS...
  local out=$RUNS/cpu-fast/$1; shift
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
