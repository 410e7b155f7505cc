"""Reading finished (or running) runs back for reports: one :class:`RunRecord` per path.

A path may be a run folder (``dmnn train --out``), a ``dmnn eval`` output (``BASE.json``), or a
metrics JSON copied into ``results/`` (``scripts/collect.py``). What each holds is read as it is:
nothing is recomputed, so a figure shows exactly the numbers the run reported.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from safetensors.numpy import load as load_safetensors

from ..errors import UsageError
from ..files import with_ext
from ..registry import backbone_of, create_model, list_models, method_of

DATA_SHAPES = {"digits": (10, 8), "cifar10": (10, 32), "cifar100": (100, 32)}
"""(classes, image side) of the built-in datasets: what the static MACs are counted at."""


@dataclass
class RunRecord:
    """What a report can show of one run; absent parts are None."""

    name: str
    source: Path
    metrics: dict[str, Any]  # metrics.json, an eval summary, or the last epoch's test numbers
    finished: bool
    config: dict[str, Any] = field(default_factory=dict)
    epochs: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl
    per_sample: dict[str, np.ndarray] | None = None  # dmnn eval's per-sample tensors
    bench: dict[int, dict[str, Any]] = field(default_factory=dict)  # batch -> bench JSON

    @property
    def model(self) -> str:
        return str(self.metrics.get("model") or self.config.get("model", "?"))

    @property
    def method(self) -> str:
        return method_of(self.model).name if self.model in list_models() else "?"

    @property
    def dataset(self) -> str:
        return str(self.metrics.get("dataset") or self.config.get("dataset", "?"))

    @property
    def is_backbone(self) -> bool:
        """A static backbone itself (the network a user would deploy instead)."""
        return self.model in list_models() and backbone_of(self.model) == self.model

    @property
    def is_static(self) -> bool:
        """An ungated network (a backbone at any width, a twin with any k of its N sub-blocks):
        a point of the static frontier that dynamic runs are compared with."""
        return self.model in list_models() and not method_of(self.model).gated

    @property
    def dynamic(self) -> bool:
        return self.model in list_models() and method_of(self.model).gated

    def static_macs(self) -> int | None:
        """All-on MACs of the run's static backbone (what a user would deploy instead)."""
        if self.model not in list_models():
            return None
        classes, side = DATA_SHAPES.get(self.dataset, (1000, 224))
        side = int(self.config.get("image_size") or side)
        backbone = create_model(backbone_of(self.model), num_classes=classes)
        return backbone.macs_table(side).full


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read {path}: {err}") from None


def _per_sample(path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    try:
        return load_safetensors(data)
    except Exception as err:  # safetensors raises its own error types
        raise UsageError(f"cannot read per-sample records {path}: {err}") from None


def _eval_records(summary_path: Path, summary: dict[str, Any]) -> dict[str, np.ndarray] | None:
    """The per-sample records a ``dmnn eval`` summary names: where it says, else beside it
    (results moved from another machine), plain or gzipped."""
    beside = with_ext(summary_path, ".safetensors")
    named = Path(summary.get("per_sample_file") or beside)
    for candidate in (named, summary_path.parent / named.name, beside,
                      with_ext(summary_path, ".safetensors.gz")):
        if candidate.is_file():
            return _per_sample(candidate)
    return None


def _find_per_sample(folder: Path, stem: str) -> dict[str, np.ndarray] | None:
    """Per-sample records of a run: ``dmnn eval``'s output beside its checkpoint."""
    for name in (f"{stem}.eval.json", "calibrated.eval.json", "last.eval.json"):
        summary = folder / name
        if summary.is_file():
            return _eval_records(summary, _read_json(summary))
    return None


def _bench(folder: Path, stem: str) -> dict[int, dict[str, Any]]:
    out = {}
    for path in sorted(folder.glob(f"{stem}.bench_b*.json")) + sorted(folder.glob("bench_b*.json")):
        batch = path.name.rsplit("_b", 1)[1].removesuffix(".json")
        if batch.isdigit():
            out[int(batch)] = _read_json(path)
    return out


def read_run(path: str | Path) -> RunRecord:
    """The run at ``path`` (see the module docstring); ValueError when it holds none."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    if path.is_file() and path.suffix == ".json":
        data = _read_json(path)
        if isinstance(data, dict) and "per_sample_file" in data:  # a dmnn eval output
            return RunRecord(path.name.removesuffix(".json"), path, data, True,
                             per_sample=_eval_records(path, data))
        if isinstance(data, dict) and "top1" in data and "macs_mean" in data:  # results copy
            stem = path.name.removesuffix(".json")
            return RunRecord(stem, path, data, True, config=data.get("config") or {},
                             per_sample=_find_per_sample(path.parent, stem),
                             bench=_bench(path.parent, stem),
                             epochs=_jsonl(path.parent / f"{stem}.metrics.jsonl"))
    raise UsageError(f"{path} holds no dmnn run: pass a run folder (dmnn train --out), a "
                     "dmnn eval output (.json) or a metrics JSON")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line a crash left half-written
    return out


def _read_folder(folder: Path) -> RunRecord:
    config = {}
    if (folder / "config.yaml").is_file():
        config = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    epochs = _jsonl(folder / "metrics.jsonl")
    if (folder / "metrics.json").is_file():
        metrics, finished = _read_json(folder / "metrics.json"), True
    elif epochs:  # still training: its last epoch's test numbers
        last = epochs[-1]
        metrics = {k.removeprefix("test_"): v for k, v in last.items() if k.startswith("test_")}
        metrics.update(model=config.get("model"), dataset=config.get("dataset"),
                       target_rate=config.get("target_rate"))
        finished = False
    else:
        raise UsageError(f"{folder} holds no dmnn run (no metrics.json or metrics.jsonl): pass "
                         "a folder written by dmnn train")
    return RunRecord(folder.name, folder, metrics, finished, config=config, epochs=epochs,
                     per_sample=_find_per_sample(folder, "calibrated"),
                     bench=_bench(folder.parent, folder.name) | _bench(folder, ""))
