#!/usr/bin/env bash
# The cpu-fast CIFAR-10 result: static ResNet-20 and DMNN-20 (N=2) at r = 0.5 and 0.7, the same
# data, augmentation and schedule. Run from the repo root; re-running resumes unfinished runs
# from their last finished epoch. RUNS (default: runs) is where the run folders go: point it
# outside the work tree to keep checkpoints across sessions. Then
#   python scripts/collect.py "$RUNS/cpu-fast" results/cpu-fast
# copies each metrics.json here and prints the README table.
set -euo pipefail
source "$(dirname "$0")/train_runs.sh"
run cpu-fast resnet20 --model resnet20
run cpu-fast dmnn_resnet20_r0.5 --model dmnn_resnet20 --sub-blocks 2 --target-rate 0.5
run cpu-fast dmnn_resnet20_r0.7 --model dmnn_resnet20 --sub-blocks 2 --target-rate 0.7
run cpu-fast dmnn_resnet20_r0.5_paperloss --model dmnn_resnet20 --sub-blocks 2 --target-rate 0.5 --path-balance 0 --dual-step 0  # ablation: the paper's loss alone
run cpu-fast dmnn_resnet20_r0.5_warmup4 --model dmnn_resnet20 --sub-blocks 2 --target-rate 0.5 --config scripts/configs/warmup4.yaml  # gate warm-up: 4 epochs all sub-blocks on
run cpu-fast dmnn_resnet20_r0.5_balance0.05 --model dmnn_resnet20 --sub-blocks 2 --target-rate 0.5 --path-balance 0.05  # weaker path balance: may sub-blocks specialise as AIG's blocks do?
