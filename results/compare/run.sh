#!/usr/bin/env bash
# Peer methods beside DMNN on one backbone (ResNet-20), CIFAR-10, preset cpu-fast: the same data,
# augmentation, schedule, MACs table and sparse executor. Static, DMNN r=0.5/0.7 come from
# results/cpu-fast (same preset, same seed); this adds the static twin and the peers at matched
# compute (r = 0.5 where the method allows a target). Re-running resumes unfinished runs.
#   RUNS=/somewhere/outside/the/worktree bash results/compare/run.sh
#   python results/collect.py "$RUNS/compare" results/compare
set -euo pipefail
DATA=${DATA:-../shared/data/cifar-10-batches-py}
RUNS=${RUNS:-runs}
run() {  # run NAME ARGS...
  local out=$RUNS/compare/$1; shift
  if [ -f "$out/metrics.json" ]; then echo "$out done"; return; fi
  if [ -f "$out/last.json" ]; then
    dmnn train --out "$out" --resume --no-progress
  else
    rm -rf "$out"
    dmnn train --preset cpu-fast --data-dir "$DATA" --out "$out" --no-progress "$@"
  fi
}
run twin_resnet20 --model twin_resnet20 --sub-blocks 2
run aig_resnet20_t0.5 --model aig_resnet20 --target-rate 0.5
run lcnet_resnet20_r0.5 --model lcnet_resnet20 --target-rate 0.5
run drnet_resnet20_r0.5 --model drnet_resnet20 --target-rate 0.5
