#!/usr/bin/env bash
# The fused executor against the static network a user would deploy (issue #13). Run from the
# repo root on a quiet machine (2 threads); every figure is a ratio measured within one command.
# Writes results/bench/fused/*.json and prints the summary table (results/bench/fused/summary.md).
#   bash scripts/bench/fused.sh [CHECKPOINT.json]   (a trained DMNN-20 checkpoint, optional)
set -euo pipefail
out=results/bench/fused
mkdir -p "$out"
save() { local f=$out/$1; shift; "$@" > "$f.tmp"; mv "$f.tmp" "$f"; echo "$f" >&2; }
for layout in "" "--channels-last"; do
  tag=${layout:+_cl}
  save "dmnn_resnet50_b1$tag.json" dmnn bench dmnn_resnet50 --batch 1 --rate 0.5 --threads 2 \
    --input-size 224 --repeats 30 $layout --json
  save "dmnn_resnet50_b32$tag.json" dmnn bench dmnn_resnet50 --batch 32 --rate 0.5 \
    --threads 2 --input-size 224 --repeats 5 --warmup 1 $layout --json
  save "dmnn_resnet56_b32$tag.json" dmnn bench dmnn_resnet56 --batch 32 --rate 0.5 \
    --threads 2 --repeats 30 $layout --json
  save "dmnn_resnet56_b1$tag.json" dmnn bench dmnn_resnet56 --batch 1 --rate 0.5 --threads 2 \
    --repeats 150 $layout --json
done
if [ -n "${1:-}" ]; then
  for b in 1 32; do
    save "trained_dmnn_resnet20_b$b.json" dmnn bench --checkpoint "$1" --batch $b --threads 2 \
      --repeats $((b == 1 ? 300 : 40)) --json
  done
fi
python - "$out" <<'PY' | tee "$out/summary.md"
import json, pathlib, sys
rows = []
for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    r = json.loads(f.read_text())
    ms = r["latency_ms"]
    fused = ms.get("fused", ms.get("model"))
    rows.append(
        f"| {f.stem} | {ms['static']:.2f} | {ms['static_unfolded']:.2f} | {fused:.2f} | "
        f"{r['latency_ratio_vs_static']:.3f} | {r['macs_ratio_vs_static']:.3f} | "
        f"{r['latency_over_macs_vs_static']:.3f} | "
        f"{r.get('all_on_vs_static', float('nan')):.3f} | "
        f"{r.get('controller_overhead', float('nan')):+.1%} |")
print("| run | static folded ms | static unfolded ms | DMNN fused ms | latency ÷ static | "
      "MACs ÷ static | quotient | all on ÷ static | controller overhead |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
print("\n".join(rows))
PY
