# Sourced by scripts/train_*.sh: `run GROUP NAME ARGS...` trains one run of the
# cpu-fast preset into $RUNS/GROUP/NAME, resumes it if it has a checkpoint, skips it if finished.
# ONLY=NAME trains just that run (to run two of a group side by side, one process per core).
DATA=${DATA:-../shared/data/cifar-10-batches-py}
RUNS=${RUNS:-runs}
run() {
  if [ -n "${ONLY:-}" ] && [ "$2" != "$ONLY" ]; then return; fi
  local out=$RUNS/$1/$2; shift 2
  if [ -f "$out/metrics.json" ]; then echo "$out done"; return; fi
  if [ -f "$out/last.json" ]; then
    dmnn train --out "$out" --resume --no-progress
  else
    rm -rf "$out"
    dmnn train --preset cpu-fast --data-dir "$DATA" --out "$out" --no-progress "$@"
  fi
}
