#!/usr/bin/env bash
# The accuracy–compute frontier (#16): static networks at several MACs levels, DMNN and its peers
# with each recipe lever, CIFAR-10, ResNet-20, the cpu-fast preset (same data, augmentation,
# schedule). Runs go to $RUNS/frontier-$STAGE/NAME, JOBS at a time with one thread each; a
# finished run is skipped, an unfinished one resumed, so re-running after any interruption goes on.
#   STAGE=proxy  12 k training images, 8 epochs (~10 min a static run on one thread): the screen
#   STAGE=full   the whole training set, 20 epochs (1–2 h a run): the frontier itself
#   RUNS=/root/dmnn-runs STAGE=proxy nohup bash scripts/frontier/run.sh > frontier.log 2>&1 &
# Every finished run is copied to results/frontier/$STAGE/NAME.json and the table there rebuilt
# (scripts/frontier/table.py), so results outlive the run folder: commit them.
# PART=screen|frontier|all (proxy: all; full: frontier, the screen's best recipe only).
# ONLY=NAME[,NAME...] runs just those; a run with `after=DEP` waits for DEP (a warm start's source).
# PART=deep (#32): the depth study, ResNet-56 (DMNN-56 N = 2 against static ResNet-56, its twin
# with one sub-block per block and width-scaled ResNet-56s, a warm start from a trained twin), in
# its own group frontier-$STAGE-deep and results/frontier/$STAGE-deep (another backbone: never
# one table with the ResNet-20 runs). PART=r07 (#32): DMNN-20 pe + λ at r = 0.7, two seeds.
# PART=latency (#33): DMNN and AIG trained with --budget latency against a table profiled here
# once (batch 32, one thread, $GROUP/tables/), at the static twin-half's measured latency ratio
# (LAT_TWIN, 0.75 by default: README's 0.751 at batch 32) and at one lower level (LAT_LOW), in
# frontier-$STAGE-latency and results/frontier/$STAGE-latency; with the static networks that the
# frontier study lacks at those latencies (shallower ResNets, the twin with 3 of 4 sub-blocks) and
# MACs-budget DMNNs (the default recipe), to be timed in one loop with them
# (scripts/frontier/latency.py).
# DEVICE=cuda trains on a GPU (data on the device, JOBS=8 by default) into frontier-$STAGE-cuda
# and results/frontier/$STAGE-cuda: GPU runs are kept apart from the CPU ones, never mixed in a
# table. DMNN="python3 -m dmnn" where the entry point is not installed (scripts/frontier/device.sh).
set -euo pipefail
{  # bash parses this whole block before running it: editing the file under a running grid is safe
cd "$(dirname "$0")/../.."
STAGE=${STAGE:-proxy}
RUNS=${RUNS:-runs}
DATA=${DATA:-../shared/data/cifar-10-batches-py}
DEVICE=${DEVICE:-cpu}
DMNN=${DMNN:-dmnn}
case "$STAGE" in
  proxy) EXTRA="--max-train-samples 12000 --epochs 8"; HALF=4; PART=${PART:-all}; REFS="" ;;
  full) EXTRA=""; HALF=10; PART=${PART:-frontier}
    # the earlier cpu-fast runs (same preset, seed 0) stand in for the frontier runs not rerun
    REFS="results/cpu-fast/resnet20.json results/cpu-fast/dmnn_resnet20_r0.5.json
      results/cpu-fast/dmnn_resnet20_r0.7.json results/compare/aig_resnet20_t0.5.json
      results/compare/drnet_resnet20_r0.5.json results/compare/lcnet_resnet20_r0.5.json
      results/compare/twin_resnet20.json" ;;
  *) echo "error: STAGE must be proxy or full, got $STAGE" >&2; exit 2 ;;
esac
case "$DEVICE" in
  cpu) JOBS=${JOBS:-2}; SET=$STAGE; COMMON="--threads 1" ;;
  cuda) JOBS=${JOBS:-8}; SET=$STAGE-cuda; COMMON="--device cuda"; REFS="" ;;
  *) echo "error: DEVICE must be cpu or cuda, got $DEVICE" >&2; exit 2 ;;
esac
[ "$PART" = deep ] && SET=$SET-deep && REFS=""
[ "$PART" = latency ] && SET=$SET-latency && REFS=""
GROUP=$RUNS/frontier-$SET
RESULTS=results/frontier/$SET
D="--model dmnn_resnet20 --sub-blocks 2"
A="--model aig_resnet20"
# The recipe the screen picked for the frontier (results/frontier/README.md says why)
BEST="--gate-entropy 2"
# NAME [after=DEP] ARGS...   (one run per line; order = start order)
screen_main() {  # the levers that decide the recipe, DMNN r = 0.5 and AIG t = 0.5
  cat <<PLAN
resnet20 --model resnet20
dmnn_r0.5 $D --target-rate 0.5
twin_e$HALF --model twin_resnet20 --sub-blocks 2 --epochs $HALF
dmnn_r0.5_ent2 $D --target-rate 0.5 --gate-entropy 2
dmnn_r0.5_gwd0 $D --target-rate 0.5 --gate-weight-decay 0
dmnn_r0.5_warm after=twin_e$HALF $D --target-rate 0.5 --init-from $GROUP/twin_e$HALF --epochs $HALF
dmnn_r0.5_ent2_bal1 $D --target-rate 0.5 --gate-entropy 2 --path-balance 1
dmnn_r0.5_ent0.5 $D --target-rate 0.5 --gate-entropy 0.5
dmnn_r0.5_ent2_st0 $D --target-rate 0.5 --gate-entropy 2 --gate-noise 0
dmnn_r0.5_ent2_warm after=twin_e$HALF $D --target-rate 0.5 --gate-entropy 2 --init-from $GROUP/twin_e$HALF --epochs $HALF
dmnn_r0.5_ent2_distill $D --target-rate 0.5 --gate-entropy 2 --distill 1
twin_k1of2 --model twin_resnet20 --sub-blocks 2 --keep-sub-blocks 1
aig_t0.5 $A --target-rate 0.5
aig_t0.5_ent2 $A --target-rate 0.5 --gate-entropy 2
resnet20_w0.5 --model resnet20 --width-mult 0.5
resnet20_w0.75 --model resnet20 --width-mult 0.75
PLAN
}
screen_more() {  # the rest of the ablation: each lever alone, N = 4, longer schedules (2x, 4x)
  cat <<PLAN
dmnn_r0.5_ent2_ramp$HALF $D --target-rate 0.5 --gate-entropy 2 --gate-entropy-warmup $HALF
dmnn_r0.5_ent1 $D --target-rate 0.5 --gate-entropy 1
dmnn_r0.5_paper_ent2 $D --target-rate 0.5 --recipe paper --gate-entropy 2
dmnn_r0.7_pe_dual $D --target-rate 0.7 --recipe paper-entropy --dual-step 0.1
dmnn_r0.5_pe_dual $D --target-rate 0.5 --recipe paper-entropy --dual-step 0.1
dmnn_r0.7_pe_dual_s1 $D --target-rate 0.7 --recipe paper-entropy --dual-step 0.1 --seed 1
dmnn_r0.3_pe_dual $D --target-rate 0.3 --recipe paper-entropy --dual-step 0.1
dmnn_r0.9_pe_dual $D --target-rate 0.9 --recipe paper-entropy --dual-step 0.1
resnet20_e2x --model resnet20 --epochs $((2 * 2 * HALF))
dmnn_best_r0.5_e2x $D --target-rate 0.5 $BEST --epochs $((2 * 2 * HALF))
aig_t0.5_ent0.2 $A --target-rate 0.5 --gate-entropy 0.2
dmnn_r0.5_distill $D --target-rate 0.5 --distill 1
dmnn_r0.5_n4 --model dmnn_resnet20 --sub-blocks 4 --target-rate 0.5
dmnn_r0.5_st0 $D --target-rate 0.5 --gate-noise 0
dmnn_r0.5_paper $D --target-rate 0.5 --recipe paper
dmnn_r0.5_tau0.5 $D --target-rate 0.5 --tau 0.5
dmnn_r0.5_e2x $D --target-rate 0.5 --epochs $((2 * 2 * HALF))
twin_k1of2_e2x --model twin_resnet20 --sub-blocks 2 --keep-sub-blocks 1 --epochs $((2 * 2 * HALF))
twin_k1of2_e4x --model twin_resnet20 --sub-blocks 2 --keep-sub-blocks 1 --epochs $((4 * 2 * HALF))
dmnn_best_r0.5_e4x $D --target-rate 0.5 $BEST --epochs $((4 * 2 * HALF))
aig_t0.5_distill $A --target-rate 0.5 --distill 1
twin --model twin_resnet20 --sub-blocks 2
PLAN
}
# The peers train with the guards only: the entropy term at DMNN's weight overrides AIG's target
# (aig_t0.5_ent2 ran every block for every image); aig_t0.5_ent0.2 screens a smaller weight.
frontier() {  # static at 4 MACs levels, DMNN with the best recipes (entropy, pe = paper + entropy), peers; 2 seeds at 0.5 and 0.7
  cat <<PLAN
resnet20 --model resnet20
resnet20_s1 --model resnet20 --seed 1
twin_k1of2 --model twin_resnet20 --sub-blocks 2 --keep-sub-blocks 1
twin_k1of2_s1 --model twin_resnet20 --sub-blocks 2 --keep-sub-blocks 1 --seed 1
resnet20_w0.75 --model resnet20 --width-mult 0.75
resnet20_w0.5 --model resnet20 --width-mult 0.5
dmnn_best_r0.5 $D --target-rate 0.5 $BEST
dmnn_best_r0.5_s1 $D --target-rate 0.5 $BEST --seed 1
dmnn_best_r0.7 $D --target-rate 0.7 $BEST
dmnn_best_r0.7_s1 $D --target-rate 0.7 $BEST --seed 1
dmnn_best_r0.3 $D --target-rate 0.3 $BEST
dmnn_best_r0.9 $D --target-rate 0.9 $BEST
aig_t0.5 $A --target-rate 0.5
aig_t0.5_s1 $A --target-rate 0.5 --seed 1
aig_t0.7 $A --target-rate 0.7
drnet_r0.5 --model drnet_resnet20 --target-rate 0.5
lcnet_r0.5 --model lcnet_resnet20 --target-rate 0.5
dmnn_r0.7 $D --target-rate 0.7
dmnn_pe_r0.5 $D --target-rate 0.5 --recipe paper $BEST
dmnn_pe_r0.5_s1 $D --target-rate 0.5 --recipe paper $BEST --seed 1
dmnn_pe_r0.7 $D --target-rate 0.7 --recipe paper $BEST
dmnn_pe_r0.7_s1 $D --target-rate 0.7 --recipe paper $BEST --seed 1
dmnn_pe_r0.3 $D --target-rate 0.3 --recipe paper $BEST
dmnn_pe_r0.9 $D --target-rate 0.9 --recipe paper $BEST
PLAN
}
deep() {  # #32: DMNN-56 against the static frontier at depth 56 (pe + λ: the best recipe across r)
  local d56="--model dmnn_resnet56 --sub-blocks 2 --recipe paper-entropy --dual-step 0.1"
  cat <<PLAN
dmnn56_pe_dual_r0.5 $d56 --target-rate 0.5
resnet56 --model resnet56
twin56_k1of2 --model twin_resnet56 --sub-blocks 2 --keep-sub-blocks 1
resnet56_w0.75 --model resnet56 --width-mult 0.75
dmnn56_pe_dual_r0.7 $d56 --target-rate 0.7
twin56_e$HALF --model twin_resnet56 --sub-blocks 2 --epochs $HALF
dmnn56_pe_dual_r0.5_warm after=twin56_e$HALF $d56 --target-rate 0.5 --init-from $GROUP/twin56_e$HALF --epochs $HALF
resnet56_w0.5 --model resnet56 --width-mult 0.5
dmnn56_pe_dual_r0.5_s1 $d56 --target-rate 0.5 --seed 1
PLAN
}
r07() {  # #32: the frontier study's next step, DMNN-20 pe + λ at r = 0.7
  cat <<PLAN
dmnn_pe_dual_r0.7 $D --target-rate 0.7 --recipe paper-entropy --dual-step 0.1
dmnn_pe_dual_r0.7_s1 $D --target-rate 0.7 --recipe paper-entropy --dual-step 0.1 --seed 1
PLAN
}
latency() {  # #33: the latency budget at the twin-half's latency and one level lower
  local t=$GROUP/tables lat="--budget latency --latency-batch 32"
  cat <<PLAN
dmnn_lat${LAT_TWIN}_exact $D $lat --latency-table $t/dmnn_resnet20.json --target-rate $LAT_TWIN --latency-gradient exact
dmnn_lat${LAT_TWIN} $D $lat --latency-table $t/dmnn_resnet20.json --target-rate $LAT_TWIN
aig_lat${LAT_TWIN} $A $lat --latency-table $t/aig_resnet20.json --target-rate $LAT_TWIN
dmnn_lat${LAT_LOW} $D $lat --latency-table $t/dmnn_resnet20.json --target-rate $LAT_LOW
aig_lat${LAT_LOW} $A $lat --latency-table $t/aig_resnet20.json --target-rate $LAT_LOW
dmnn_lat${LAT_TWIN}_ent0 $D $lat --latency-table $t/dmnn_resnet20.json --target-rate $LAT_TWIN --gate-entropy 0
dmnn_lat${LAT_TWIN}_ent0_dual1 $D $lat --latency-table $t/dmnn_resnet20.json --target-rate $LAT_TWIN --gate-entropy 0 --dual-step 1
dmnn_lat${LAT_TWIN}_ramp4 $D $lat --latency-table $t/dmnn_resnet20.json --target-rate $LAT_TWIN --gate-entropy-warmup 4
dmnn_lat${LAT_LOW}_ent0 $D $lat --latency-table $t/dmnn_resnet20.json --target-rate $LAT_LOW --gate-entropy 0
resnet14 --model resnet14
resnet8 --model resnet8
twin_k3of4 --model twin_resnet20 --sub-blocks 4 --keep-sub-blocks 3
dmnn_macs_r0.5 $D --target-rate 0.5
dmnn_macs_r0.3 $D --target-rate 0.3
PLAN
}
plan() {
  case "$PART" in
    latency) latency ;;
    screen) screen_main; screen_more ;;
    frontier) frontier ;;
    all) screen_main; frontier; screen_more ;;
    deep) deep ;;
    r07) r07 ;;
    *) echo "error: PART must be screen, frontier, all, deep, r07 or latency, got $PART" >&2
      exit 2 ;;
  esac
}
one() {  # NAME [after=DEP] ARGS...
  local name=$1; shift
  local out=$GROUP/$name
  if [ -n "${ONLY:-}" ] && [[ ",$ONLY," != *",$name,"* ]]; then return 0; fi
  if [[ "${1:-}" == after=* ]]; then
    local dep=$GROUP/${1#after=}; shift
    until [ -f "$dep/metrics.json" ]; do sleep 30; done
  fi
  if [ -f "$out/metrics.json" ]; then echo "$name: done"; return 0; fi
  mkdir -p "$GROUP"
  exec 9> "$GROUP/$name.lock"  # another scheduler's copy of this run holds it until it ends
  if ! flock -n 9; then echo "$name: running elsewhere"; return 0; fi
  # a restarted scheduler waits for the runs an earlier one left running
  while [ "$(pgrep -fc "dmnn train .*$GROUP/")" -ge "$JOBS" ]; do sleep 20 9>&-; done
  # shellcheck disable=SC2206
  local common=($COMMON --no-progress)
  if [ -f "$out/last.json" ]; then
    echo "$name: resuming"
    $DMNN train --out "$out" --resume "${common[@]}" > "$GROUP/$name.log" 2>&1
  else
    rm -rf "$out"
    echo "$name: starting"
    # shellcheck disable=SC2086
    $DMNN train --preset cpu-fast --data-dir "$DATA" --out "$out" "${common[@]}" $EXTRA "$@" \
      > "$GROUP/$name.log" 2>&1
  fi
  echo "$name: $(tail -1 "$GROUP/$name.log")"
  if [ -f "$out/metrics.json" ]; then
    # shellcheck disable=SC2086
    flock "$GROUP/.table.lock" "${PYTHON:-python}" scripts/frontier/table.py "$RESULTS" \
      "$out" ${REFS:-} > /dev/null
  fi
}
if [ "$PART" = latency ]; then  # one table per gated model, profiled once, before any run
  LAT_TWIN=${LAT_TWIN:-0.75}; LAT_LOW=${LAT_LOW:-0.65}
  mkdir -p "$GROUP/tables"
  for m in dmnn_resnet20 aig_resnet20; do
    [ -f "$GROUP/tables/$m.json" ] || $DMNN profile $m --batch 32 --input-size 32 --threads 1 --repeats 100 --warmup 10 \
      --out "$GROUP/tables/$m.json" > "$GROUP/tables/$m.log" 2>&1
  done
fi
export -f one
export GROUP DATA EXTRA ONLY JOBS STAGE REFS COMMON DMNN RESULTS
export OMP_NUM_THREADS=1
plan | xargs -P "$JOBS" -I{} bash -c 'one {}'
exit
}
