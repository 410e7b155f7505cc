#!/usr/bin/env bash
# The fused executor's kernel floor against the static backbone (issue #13): run from the repo
# root on a quiet machine (2 threads). Writes results/bench/floor/*.json and summary.md.
#   bash scripts/bench/conv_floor.sh
set -euo pipefail
out=results/bench/floor
mkdir -p "$out"
save() { local f=$out/$1; shift; "$@" > "$f.tmp"; mv "$f.tmp" "$f"; echo "$f" >&2; }
floor() { python scripts/bench/conv_floor.py --threads 2 --json "$@"; }
for layout in "" "--channels-last"; do
  tag=${layout:+_cl}
  save "dmnn_resnet56_b32$tag.json" floor dmnn_resnet56 --batch 32 --seeds 3 $layout
  save "dmnn_resnet50_b1$tag.json" floor dmnn_resnet50 --batch 1 --input-size 224 --seeds 8 \
    --rounds 12 $layout
done
save dmnn_resnet50_b32_cl.json floor dmnn_resnet50 --batch 32 --input-size 224 --repeats 5 \
  --rounds 5 --channels-last
python - "$out" <<'PY' | tee "$out/summary.md"
import json, pathlib, sys
print("| run | branch MACs ÷ static | branches: pattern stacks ÷ static | path stacks ÷ static |"
      " floor quotient | network MACs ÷ static | measured ÷ static | measured quotient |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    r = json.loads(f.read_text())
    print(f"| {f.stem} | {r['branch_macs_ratio']:.3f} | {r['floor_pattern_vs_static']:.3f} | "
          f"{r['floor_path_vs_static']:.3f} | {r['floor_pattern_over_macs']:.3f} | "
          f"{r['macs_ratio_vs_static']:.3f} | {r['measured_vs_static']:.3f} | "
          f"{r['measured_over_macs']:.3f} |")
PY
