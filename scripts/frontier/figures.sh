#!/usr/bin/env bash
# The frontier figures (#16) from the committed results, exactly as README shows them:
#   bash scripts/frontier/figures.sh
# full schedule: every run in results/frontier/full plus the earlier cpu-fast and peer runs of
# the same preset and seed; against MACs and against paired latency at batch 32 and 1.
# proxy: the frontier runs (static levels, each recipe at each r, peers), not the ablation.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
FIG=results/frontier/figures
REFS="results/cpu-fast/resnet20.json results/cpu-fast/dmnn_resnet20_r0.5.json
  results/cpu-fast/dmnn_resnet20_r0.7.json results/compare/aig_resnet20_t0.5.json
  results/compare/drnet_resnet20_r0.5.json results/compare/lcnet_resnet20_r0.5.json"
mapfile -t FULL < <(ls results/frontier/full/*.json | grep -v '\.bench_b')
# shellcheck disable=SC2086
"$PY" scripts/frontier/figure.py "$FIG/frontier_full.png" "${FULL[@]}" $REFS --latency-batch 32 1
P=results/frontier/proxy
"$PY" scripts/frontier/figure.py "$FIG/frontier.png" $P/{resnet20,resnet20_s1,twin_k1of2,twin_k1of2_s1,resnet20_w0.75,resnet20_w0.5,dmnn_r0.5,dmnn_best_r0.3,dmnn_best_r0.5,dmnn_best_r0.5_s1,dmnn_best_r0.7,dmnn_best_r0.7_s1,dmnn_best_r0.9,dmnn_pe_r0.3,dmnn_pe_r0.5,dmnn_pe_r0.5_s1,dmnn_pe_r0.7,dmnn_pe_r0.7_s1,dmnn_pe_r0.9,dmnn_r0.3_pe_dual,dmnn_r0.7_pe_dual,dmnn_r0.7_pe_dual_s1,dmnn_r0.9_pe_dual,aig_t0.5,aig_t0.5_s1,aig_t0.7,drnet_r0.5,lcnet_r0.5}.json
