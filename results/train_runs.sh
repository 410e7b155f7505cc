# Sourced by the results/*/run.sh scripts: `run GROUP NAME ARGS...` trains one run of the
# cpu-fast preset into $RUNS/GROUP/NAME, resumes it if it has a checkpoint, skips it if finished.
DATA=${DATA:-../shared/data/cifar-10-batches-py}
RUNS=${RUNS:-runs}
run() {
  local out=$RUNS/$1/$2; shift 2
  if [ -f "$out/metrics.json" ]; then echo "$out done"; return; fi
  if [ -f "$out/last.json" ]; then
    dmnn train --out "$out" --resume --no-progress
  else
    rm -rf "$out"
    dmnn train --preset cpu-fast --data-dir "$DATA" --out "$out" --no-progress "$@"
  fi
}
