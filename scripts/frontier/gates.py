"""How decided are a gated run's gates? (#16: the evidence behind the frontier table.)

    python scripts/frontier/gates.py DEST.md RUN...

For each run folder (its ``calibrated`` checkpoint where gate calibration wrote one, else
``last``), one pass over its test split in eval mode records every gate's on-minus-off margin
(the calibrated threshold included, so its sign is the decision) and the accuracy with the gates
as trained, with every gate forced on, and with the first sub-block of every block only (a
static half-width net, N = 2). Writes a markdown table to DEST.md (rows of runs already there and
not given now are kept, so a table outlives the run folders):

* median |margin|: how far the typical gate is from flipping. The training noise is Gumbel with
  scale ~1, so a margin well below 1 means the gate was a coin toss for most of training: each
  image trained a random subnetwork (as with heavy stochastic depth).
* patterns: distinct on/off patterns over the test images, and the share of images that take the
  most common one (1.0: routing is static in effect).
* per-sub-block rates by block;
* patterns ≥ 5 %: how many patterns at least 5 % of the test images take (#32's per-image goal:
  at least 4), and the shares of the five most common (the pattern histogram's head).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from dmnn.evaluation.metrics import gate_patterns
from dmnn.evaluation.restore import load_for_eval
from dmnn.execution.forcing import force_gates
from dmnn.train.checkpoint import read_checkpoint


def checkpoint_of(run: Path) -> Path:
    calibrated = run / "calibrated.json"
    return calibrated if calibrated.is_file() else run / "last.json"


@torch.no_grad()
def inspect(run: Path) -> dict[str, object]:
    ckpt = checkpoint_of(run)
    meta, tensors = read_checkpoint(ckpt)
    model, data, _ = load_for_eval(meta, tensors, None, "cpu", source=str(ckpt))
    model.eval()
    if not model.gated_blocks:
        raise SystemExit(f"error: {run} is a static run: it has no gates to inspect")
    margins: list[torch.Tensor] = []
    patterns: list[torch.Tensor] = []
    rates: list[torch.Tensor] = []
    n_sub = model.gated_blocks[0].num_sub_blocks
    correct = {"own gates": 0, "all on": 0} | ({"first sub-block only": 0} if n_sub == 2 else {})
    seen = 0
    first_only = [torch.tensor([1.0] + [0.0] * (b.num_sub_blocks - 1)) for b in model.blocks]
    for x, y, _ in data.test:
        logits, routing = model(x, return_routing=True)
        block_margins = []
        for extra in routing.extras:
            if "logits" in extra:
                lg = extra["logits"]
                block_margins.append((lg[..., 1] - lg[..., 0]).flatten(1))
        if block_margins:
            margins.append(torch.cat(block_margins, dim=1))
        gates = torch.cat([g.flatten(1) for g in routing.gates if g is not None], dim=1)
        patterns.append(gates.round())
        rates.append(gates.sum(0))
        correct["own gates"] += int((logits.argmax(1) == y).sum())
        with force_gates(model, "on"):
            correct["all on"] += int((model(x).argmax(1) == y).sum())
        if n_sub == 2:
            with force_gates(model, first_only):
                correct["first sub-block only"] += int((model(x).argmax(1) == y).sum())
        seen += len(y)
    m = torch.cat(margins).abs() if margins else torch.zeros(1)
    histogram = gate_patterns([torch.cat(patterns)])
    rate = torch.stack(rates).sum(0) / seen
    rate = rate.view(-1, n_sub) if n_sub == 2 else rate.view(-1, 1)
    return {
        "run": run.name, "model": meta["model"], "median": float(m.median()),
        "share_below_1": float((m < 1).float().mean()), "patterns": histogram["distinct"],
        "top_share": histogram["top_shares"][0], "rates": rate,
        "histogram": histogram["top_shares"], "common": histogram["at_least_5pct"],
        "first sub-block only": None,  # N ≠ 2: replaced below where it applies
        **{k: 100 * v / seen for k, v in correct.items()},
    }


def main(dest: str, *runs: str) -> None:
    rows = [inspect(Path(r)) for r in runs]
    lines = [
        "Gate diagnostics (`scripts/frontier/gates.py`): test split, eval mode, the run's final "
        "checkpoint.", "",
        "| run | median \\|margin\\| | margins < 1 | patterns | top pattern's share "
        "| top-1 own gates % | all on % | first sub-block only % "
        "| rates per block (sub-block 1/2) | patterns ≥ 5 % | 5 most common patterns' shares |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    new = {}
    for r in rows:
        rates = " ".join("/".join(f"{v:.2f}" for v in row) for row in r["rates"].tolist())
        first = "–" if r["first sub-block only"] is None else f"{r['first sub-block only']:.2f}"
        new[r["run"]] = (
            f"| {r['run']} | {r['median']:.2f} | {r['share_below_1']:.2f} | {r['patterns']} | "
            f"{r['top_share']:.2f} | {r['own gates']:.2f} | {r['all on']:.2f} | "
            f"{first} | {rates} | {r['common']} | "
            f"{' '.join(f'{v:.3f}' for v in r['histogram'])} |")
    kept = {}  # DEST's rows of runs not inspected now (their folders may be gone): kept
    if Path(dest).is_file():
        for line in Path(dest).read_text().splitlines()[len(lines):]:
            if line.startswith("| "):
                kept[line.split("|")[1].strip()] = line
    merged = kept | new
    lines += [merged[name] for name in sorted(merged)]
    Path(dest).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: gates.py DEST.md RUN...")
    main(sys.argv[1], *sys.argv[2:])
