#!/usr/bin/env bash
# What the distributed and precision flags cost per training epoch, on the machine at hand.
# DMNN-20 (N=2, r=0.5) on the first 6400 CIFAR-10 training images, one epoch, global batch 128,
# every variant on the same images and schedule; prints one table row per variant and writes
# $OUT/ddp_cost.md. Runs in a few minutes on 2 CPU cores.
#
#   bash scripts/bench/ddp_cost.sh [CIFAR_DIR]      (default ../shared/data/cifar-10-batches-py)
set -eu
cd "$(dirname "$0")/../.."
DATA=${1:-../shared/data/cifar-10-batches-py}
OUT=${OUT:-results/ddp-cost}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
common=(--preset cpu-fast --data-dir "$DATA" --epochs 1 --max-train-samples 6400
        --max-test-samples 512 --no-calibrate --no-progress)
row() {  # row LABEL PROCS THREADS BATCH FLAGS...
  local label=$1 procs=$2 threads=$3 batch=$4; shift 4
  local out="$WORK/$(echo "$label" | tr -c 'a-z0-9' _)"
  if [ "$procs" = 1 ]; then
    python -m dmnn train "${common[@]}" --threads "$threads" --batch-size "$batch" "$@" \
      --out "$out" > "$out.log" 2>&1
  else
    OMP_NUM_THREADS=$threads python -m torch.distributed.run --standalone \
      --nproc-per-node "$procs" -m dmnn train "${common[@]}" --batch-size "$batch" "$@" \
      --out "$out" > "$out.log" 2>&1
  fi
  python - "$out/metrics.jsonl" "$label" "$procs" "$batch" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
print(f"| {sys.argv[2]} | {sys.argv[3]} × {sys.argv[4]} | {r['train_seconds']:.1f} | "
      f"{r['train_loss']:.3f} | {r['train_macs_ratio']:.3f} |")
PY
}
{
  echo "| variant | processes × batch | epoch seconds | train loss | train MACs ratio |"
  echo "|---|---|---|---|---|"
  row "1 process, 2 threads" 1 2 128
  row "1 process, 2 threads, --amp bf16" 1 2 128 --amp bf16
  row "1 process, 2 threads, --channels-last" 1 2 128 --channels-last
  row "torchrun 2 × 1 thread (gloo)" 2 1 64
  row "torchrun 2 × 1 thread, --sync-bn" 2 1 64 --sync-bn
} | tee "$OUT/ddp_cost.md"
