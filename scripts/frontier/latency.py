"""Latency of the frontier (#16): every run timed in one loop, against the static ResNet-20.

    python scripts/frontier/latency.py DEST RUNS_DIR [--batch 32] [--repeats 30] [--threads 2]
        [--reference resnet20] [NAME ...]
    python scripts/frontier/latency.py results/frontier/proxy /root/dmnn-runs/frontier-proxy
    python scripts/frontier/latency.py results/frontier/proxy-latency RUNS/frontier-proxy-latency \
        results/frontier/proxy/{resnet20,twin_k1of2,resnet20_w0.5}.json dmnn_lat0.75 ...

``dmnn bench --checkpoint`` times one run against *its own* static backbone, which for a
width-scaled ResNet is itself; the frontier needs every run against the one network a user
would deploy instead. So this loads every named run (default: all finished runs in RUNS_DIR,
their ``calibrated`` checkpoint where gate calibration wrote one), and times all of them on the
same real test images in one rotated loop (no run always first or last), each in its default
eval execution (fused with BN folded for gated models, folded for static ones) with its own
trained gates. Ratios are paired medians against the reference run (``paired_ratio``). Run on a
quiet machine. Writes ``DEST/latency_bB.json``, ``DEST/latency_bB.md`` and the figure (top-1
against the latency ratio) at ``--figure`` (default ``DEST/latency_bB.png``; it once went beside
DEST, where a second study's overwrote the first's).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from dmnn.evaluation.figures import accuracy_against
from dmnn.evaluation.latency import median_ms, paired_ratio, timed_round
from dmnn.evaluation.latency_trained import gather_images
from dmnn.evaluation.restore import load_for_eval
from dmnn.evaluation.runs import read_run
from dmnn.registry import create_model
from dmnn.train.checkpoint import read_checkpoint
from dmnn.train.config import TrainConfig
from dmnn.train.data import load_run_data
from dmnn.train.engine import model_kwargs


def checkpoint_of(run: Path) -> Path:
    calibrated = run / "calibrated.json"
    return calibrated if calibrated.is_file() else run / "last.json"


def static_from_results(path: Path):
    """A static network rebuilt from a results copy's config (``table.py`` writes them), with
    fresh weights: an ungated network's time does not depend on its weights, so the copy of a
    run whose folder is gone still places it. Gated runs need their checkpoint (their gates
    decide what runs)."""
    record = read_run(path)
    if not record.is_static:
        raise SystemExit(f"error: {path} is a gated run: time it from its run folder")
    cfg = TrainConfig.from_dict(record.config, saved=True)
    data = load_run_data(cfg)
    return create_model(cfg.model, **model_kwargs(cfg, data)), data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dest", type=Path)
    ap.add_argument("runs", type=Path)
    ap.add_argument("names", nargs="*", help="run folders in RUNS_DIR (default: every finished); "
                    "a name with a / is a run folder anywhere (runs of other groups, e.g. the "
                    "static networks of the frontier beside a latency study), or a static "
                    "run's results copy (NAME.json)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reference", default="resnet20")
    ap.add_argument("--figure", type=Path, default=None,
                    help="where the figure goes (default: DEST/latency_bB.png)")
    args = ap.parse_args()
    names = args.names or sorted(m.parent.name for m in args.runs.glob("*/metrics.json"))
    folders = {Path(n).name.removesuffix(".json"): Path(n) if "/" in n else args.runs / n
               for n in names}
    if args.reference not in folders:
        folders = {args.reference: args.runs / args.reference, **folders}
    torch.set_num_threads(args.threads)
    models, records, images = {}, {}, None
    for name, folder in folders.items():
        if folder.suffix == ".json":  # a static run whose folder is gone: its results copy
            model, data = static_from_results(folder)
        else:
            meta, tensors = read_checkpoint(checkpoint_of(folder))
            model, data, _ = load_for_eval(meta, tensors, None, "cpu", source=name)
        model.eval().set_execution("auto")
        models[name], records[name] = model, read_run(folder)
        if images is None:
            images = gather_images(data.test, args.batch * (args.warmup + args.repeats))
    assert images is not None
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for i in range(args.warmup + args.repeats):
            x = images[i * args.batch:(i + 1) * args.batch]
            round_ = {k: (lambda m=m, x=x: m(x)) for k, m in models.items()}
            timed_round(round_, i, times if i >= args.warmup else None)
    reference_macs = records[args.reference].metrics["macs_mean"]
    rows = {}
    for name, rec in records.items():
        rows[name] = {
            "model": rec.model, "top1": rec.metrics["top1"],
            "macs_ratio": rec.metrics["macs_mean"] / reference_macs,
            "ms": median_ms(times[name]),
            "latency_ratio": paired_ratio(times[name], times[args.reference]),
        }
        rows[name]["latency_over_macs"] = rows[name]["latency_ratio"] / rows[name]["macs_ratio"]
    result = {"batch": args.batch, "threads": torch.get_num_threads(), "repeats": args.repeats,
              "warmup": args.warmup, "reference": args.reference,
              "images": f"{records[args.reference].dataset} test",
              "runs": rows}
    args.dest.mkdir(parents=True, exist_ok=True)
    stem = f"latency_b{args.batch}"
    (args.dest / f"{stem}.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    lines = [
        f"Every run timed in one rotated loop (`scripts/frontier/latency.py`), batch "
        f"{args.batch}, {result['threads']} threads, median of {args.repeats} batches of "
        f"{result['images']} images, "
        f"each run's default eval execution (fused, BN folded) with its own gates. Ratios: paired "
        f"medians against `{args.reference}`.", "",
        "| run | top-1 % | MACs ÷ ref | ms / batch | latency ÷ ref | latency ratio ÷ MACs ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in sorted(rows.items(), key=lambda kv: kv[1]["latency_ratio"]):
        lines.append(f"| {name} | {100 * r['top1']:.2f} | {r['macs_ratio']:.3f} | {r['ms']:.2f} "
                     f"| {r['latency_ratio']:.3f} | {r['latency_over_macs']:.2f} |")
    (args.dest / f"{stem}.md").write_text("\n".join(lines) + "\n")
    figure = args.figure or args.dest / f"{stem}.png"
    figure.parent.mkdir(parents=True, exist_ok=True)
    accuracy_against(
        list(records.values()), {k: r["latency_ratio"] for k, r in rows.items()},
        f"latency ÷ static {args.reference}, batch {args.batch} (this CPU, one loop)", figure)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
