#!/usr/bin/env bash
# The prepared GPU check (issue #15): at most ~8 minutes on one GPU, with nothing installed:
# the machine's own python3 and torch, PYTHONPATH=src.
#
#   bash scripts/bench/device_check.sh            # on the GPU machine, from the repository root
#   DEVICE=cpu EPOCHS=1 REPEATS=1 BATCHES=1 TRAIN_ARGS="--max-train-samples 1000" \
#     bash scripts/bench/device_check.sh                      # a dry run of the same steps
#
# Steps: environment; the CUDA-marked tests (tests/test_cuda.py: sparse == masked dense on the
# GPU, host syncs per block, bf16 training with the data on the device); a 2-epoch CIFAR-10 DMNN
# run on CUDA in bf16 (digits when no CIFAR-10 folder is found: say so); the sparse-vs-static
# latency bench at 224 px, batch 1 and 32. Logs and JSON go to $OUT (default
# results/device-check); one summary at the end (also $OUT/summary.txt).
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH=src OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
EPOCHS=${EPOCHS:-2}
REPEATS=${REPEATS:-20}
BATCHES=${BATCHES:-1 32}
read -r -a extra <<< "${TRAIN_ARGS:-}"
OUT=${OUT:-results/device-check}
CIFAR=${CIFAR:-}
for d in "$CIFAR" shared/data/cifar-10-batches-py ../shared/data/cifar-10-batches-py; do
  if [ -n "$d" ] && [ -f "$d/data_batch_1" ]; then CIFAR=$d; break; fi
done
mkdir -p "$OUT"
summary=()
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log
  local name=$1 limit=$2; shift 2
  local start=$SECONDS rc=0
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1 || rc=$?
  local verdict=ok; [ $rc -ne 0 ] && verdict="FAILED (exit $rc, see $OUT/$name.log)"
  summary+=("$name: $verdict, $((SECONDS - start)) s")
}

{ date -u; command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total \
    --format=csv,noheader
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available())"; } > "$OUT/env.txt" 2>&1
summary+=("env: $(tail -1 "$OUT/env.txt")")

if $PY -c "import pytest" 2> /dev/null; then
  step cuda_tests 150 $PY -m pytest -q -s -p no:cacheprovider tests/test_cuda.py
  summary+=("  $(grep -E 'passed|failed|skipped' "$OUT/cuda_tests.log" | tail -1)")
  summary+=("  $(grep -m1 'host syncs' "$OUT/cuda_tests.log")")
else
  summary+=("cuda_tests: skipped (no pytest on this machine)")
fi

run=$OUT/train_run
rm -rf "$run"
if [ -n "$CIFAR" ]; then
  data=(--preset cpu-fast --data-dir "$CIFAR"); what="CIFAR-10 ($CIFAR)"
else
  data=(--preset digits); what="digits (no CIFAR-10 folder found: pass CIFAR=...)"
fi
amp=bf16
step train 240 $PY -m dmnn train "${data[@]}" --device "$DEVICE" --amp $amp --channels-last \
  --epochs "$EPOCHS" --out "$run" --no-progress "${extra[@]}"
summary+=("  $what, $EPOCHS epochs, --amp $amp --channels-last: $(tail -1 "$OUT/train.log")")

for b in $BATCHES; do
  step "bench_b$b" 120 $PY -m dmnn bench dmnn_resnet50 --rate 0.5 --batch $b --input-size 224 \
    --device "$DEVICE" --repeats "$REPEATS" --warmup 2 --json
  $PY - "$OUT/bench_b$b.log" <<'PY' >> "$OUT/bench.txt" 2>&1 || true
import json, sys
text = open(sys.argv[1]).read()
r = json.loads(text[text.index("{"):])
ms = r["latency_ms"]
print(f"batch {r['batch']}: static {ms['static']:.2f} ms, sparse r=0.5 {ms['sparse']:.2f} ms "
      f"(x{r['latency_ratio_vs_static']:.3f} static at MACs x{r['macs_ratio']:.3f} of all-on), "
      f"all-on masked {ms['all_on_masked']:.2f} ms")
PY
  summary+=("  $(tail -1 "$OUT/bench.txt" 2> /dev/null)")
done

printf '%s\n' "device check ($DEVICE), $(date -u +%FT%TZ)" "${summary[@]}" | tee "$OUT/summary.txt"
