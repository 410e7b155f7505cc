"""Checkpoints: safetensors for tensors, JSON for everything else, both written atomically.

A checkpoint ``NAME`` is ``NAME.safetensors`` (model weights, optimizer buffers, RNG states) and
``NAME.json`` (model name and options, epoch, config, optimizer hyper-parameters, scheduler
position, metrics, and the SHA-256 of the tensor file). The JSON is written last, so a checkpoint
whose JSON exists is complete; loading checks the hash. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import CheckpointError
from ..network.gate import Gate

FORMAT = "dmnn-checkpoint/1"


def _temp_beside(path: Path) -> tuple[int, str]:
    """A temp file next to ``path`` (same filesystem, so the rename is atomic), mode 0666&~umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return fd, tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over ``path``."""
    fd, tmp = _temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Save a safetensors file atomically; returns its SHA-256."""
    fd, tmp = _temp_beside(path)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp)
        digest = _sha256(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every RNG a training run draws from: torch (CPU, CUDA), numpy, Python."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    py_state = random.getstate()
    meta = {
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    p = meta["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def _split_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    per_param: dict[str, dict[str, Any]] = {}
    for idx, entry in state["state"].items():
        plain = {}
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                plain[key] = value
        per_param[str(idx)] = plain
    return tensors, {"param_groups": state["param_groups"], "state": per_param}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(k): dict(v) for k, v in meta["state"].items()}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    model_name: str,
    model_kwargs: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    epoch: int = 0,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``path``.safetensors then ``path``.json; returns the JSON path."""
    base = Path(path)
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    meta: dict[str, Any] = {
        "format": FORMAT, "model": model_name, "model_kwargs": model_kwargs, "epoch": epoch,
        "extra": extra or {},
    }
    if optimizer is not None:
        opt_tensors, meta["optimizer"] = _split_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
    if scheduler is not None:
        meta["scheduler"] = {"last_epoch": scheduler.last_epoch}
    rng_tensors, meta["rng"] = rng_state()
    tensors.update(rng_tensors)
    tensor_path, json_path = with_ext(base, ".safetensors"), with_ext(base, ".json")
    meta["sha256"] = atomic_save_tensors(tensor_path, tensors)
    meta["tensors"] = tensor_path.name
    atomic_write_json(json_path, meta)
    return json_path


def with_ext(base: str | Path, ext: str) -> Path:
    """``base`` + ``ext``, after dropping a .json/.safetensors ending; other dots are part of the
    name (Path.with_suffix would turn "run/epoch.1" into "run/epoch.json")."""
    name = str(base).removesuffix(".json").removesuffix(".safetensors")
    return Path(name + ext)


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a checkpoint given its .json, .safetensors or base path."""
    json_path = with_ext(Path(path), ".json")
    if not json_path.is_file():
        raise CheckpointError(
            f"checkpoint {json_path} not found: pass the .json written by `dmnn train`"
        )
    try:
        meta = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint {json_path} is not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{json_path} is not a dmnn checkpoint (format {FORMAT} expected)")
    tensor_path = json_path.parent / meta["tensors"]
    if not tensor_path.is_file():
        raise CheckpointError(f"checkpoint tensors {tensor_path} are missing")
    if _sha256(tensor_path) != meta.get("sha256"):
        raise CheckpointError(f"checkpoint tensors {tensor_path} do not match their hash: corrupt")
    try:
        tensors = load_file(str(tensor_path))
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"cannot read {tensor_path}: {err}") from None
    return meta, tensors


def model_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}


def load_weights(model: nn.Module, tensors: dict[str, torch.Tensor], source: str = "") -> None:
    """Strict load that reports an architecture mismatch as one line.

    A gate may list buffers added after checkpoints were first written in ``optional_state``;
    its ``_load_from_state_dict`` supplies their old value when a checkpoint lacks them."""
    state = model_state(tensors)
    own = model.state_dict()
    optional = {f"{name}.{key}" if name else key for name, module in model.named_modules()
                if isinstance(module, Gate) for key in module.optional_state}
    missing = sorted(set(own) - set(state) - optional)
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = (missing and f"missing {missing[0]}") or (
            unexpected and f"unexpected {unexpected[0]}") or f"shape of {wrong[0]}"
        raise CheckpointError(
            f"checkpoint {source} does not match the model architecture ({detail}; "
            f"{len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} reshaped)"
        )
    model.load_state_dict(state)


def restore_training(
    meta: dict[str, Any], tensors: dict[str, torch.Tensor], optimizer: Any, scheduler: Any
) -> None:
    """Optimizer buffers, scheduler position and RNG states, for an exact resume."""
    if optimizer is not None and "optimizer" in meta:
        optimizer.load_state_dict(_join_optimizer(tensors, meta["optimizer"]))
    if scheduler is not None and "scheduler" in meta:
        scheduler.last_epoch = meta["scheduler"]["last_epoch"]
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]  # noqa: SLF001
    set_rng_state(tensors, meta["rng"])
