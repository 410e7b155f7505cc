#!/usr/bin/env bash
# Batch-1 and batch-32 CPU latency of every finished run of a group, with its own trained gates
# on its own test images, against its static backbone (`dmnn bench --checkpoint`). Run on a quiet
# machine (pause training first), from the repo root:
#   RUNS=runs bash scripts/bench_runs.sh compare
# writes results/GROUP/RUN.bench_b{1,32}.json, which scripts/collect.py puts in the table.
# DEST=FOLDER writes there instead; ONLY=NAME[,NAME...] benches just those runs; BATCHES="32"
# (default "1 32") the batch sizes.
#   RUNS=/root/dmnn-runs DEST=results/frontier/proxy BATCHES=32 bash scripts/bench_runs.sh frontier-proxy
set -euo pipefail
group=$1
RUNS=${RUNS:-runs}
DEST=${DEST:-results/$group}
declare -A ROUNDS=([1]=200 [32]=30)
for run in "$RUNS/$group"/*/; do
  name=$(basename "$run")
  [ -f "$run/metrics.json" ] || continue
  if [ -n "${ONLY:-}" ] && [[ ",$ONLY," != *",$name,"* ]]; then continue; fi
  for batch in ${BATCHES:-1 32}; do
    set -- "$batch" "${ROUNDS[$batch]:-30}"
    out=$DEST/$name.bench_b$1.json
    [ -f "$out" ] && continue
    ckpt=$run/last.json
    [ -f "$run/calibrated.json" ] && ckpt=$run/calibrated.json  # the weights metrics.json reports
    dmnn bench --checkpoint "$ckpt" --batch "$1" --repeats "$2" --threads 2 --json \
      > "$out.tmp"
    mv "$out.tmp" "$out"
    echo "$out"
  done
done
