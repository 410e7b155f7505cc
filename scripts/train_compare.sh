#!/usr/bin/env bash
# Peer methods beside DMNN on one backbone (ResNet-20), CIFAR-10, preset cpu-fast: the same data,
# augmentation, schedule, MACs table and sparse executor. Static, DMNN r=0.5/0.7 come from
# the cpu-fast group (same preset, same seed); this adds the static twin and the peers at matched
# compute (r = 0.5 where the method allows a target). Re-running resumes unfinished runs.
#   RUNS=/somewhere/outside/the/worktree bash scripts/train_compare.sh
#   python scripts/collect.py "$RUNS/compare" results/compare
set -euo pipefail
source "$(dirname "$0")/train_runs.sh"
run compare twin_resnet20 --model twin_resnet20 --sub-blocks 2
run compare aig_resnet20_t0.5 --model aig_resnet20 --target-rate 0.5
run compare lcnet_resnet20_r0.5 --model lcnet_resnet20 --target-rate 0.5
run compare drnet_resnet20_r0.5 --model drnet_resnet20 --target-rate 0.5
