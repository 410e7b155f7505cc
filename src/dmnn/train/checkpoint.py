"""Checkpoints: safetensors for tensors, JSON for everything else, committed as one.

A checkpoint ``NAME`` is ``NAME.json`` (model name and options, epoch, config, optimizer
hyper-parameters, scheduler position, metrics, the name and SHA-256 of its tensor file) and the
tensor file it names, ``NAME.<hash>.safetensors`` (model weights, optimizer buffers, RNG states).
A save writes the new tensor file under its own name first, then renames the new JSON over the
old one (the commit point), then removes the tensor file the old JSON named. A crash at any
instant therefore leaves a JSON naming a complete tensor file: the old pair or the new one.
Leftover temp files and orphaned tensor files are removed by the next save (:func:`tidy`).
Checkpoints written before versioned names (``NAME.safetensors``) load as before. Nothing is ever
unpickled.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import CheckpointError
from ..files import (
    atomic_write_json,
    move_into_place,
    temp_beside,
    umask_mode,
    with_ext,
)
from ..network.gate import Gate

FORMAT = "dmnn-checkpoint/1"

FAULT: Callable[[str, Path], None] | None = None
"""Fault injection for tests: called with each step of a save ("tensors-written",
"tensors-renamed", "json-renamed", "tidied") and the checkpoint's JSON path; a test makes it
kill the process there (tests/test_faults.py)."""


def _step(name: str, json_path: Path) -> None:
    if FAULT is not None:
        FAULT(name, json_path)


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> tuple[str, str]:
    """The tensors in a fsynced temp file beside ``path`` (honouring the umask: safetensors
    creates its file 0600); returns (temp path, SHA-256)."""
    fd, tmp = temp_beside(path)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp)
        os.chmod(tmp, umask_mode())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        return tmp, _sha256(Path(tmp))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Save a safetensors file atomically; returns its SHA-256."""
    tmp, digest = _write_tensors(path, tensors)
    move_into_place(tmp, path)
    return digest


def tidy(base: Path, keep: str | None) -> None:
    """Remove what interrupted saves of checkpoint ``base`` left: temp files, and tensor files of
    this checkpoint other than ``keep`` (the one its JSON names)."""
    name = base.name
    for path in base.parent.glob(f".{glob.escape(name)}.*.tmp"):
        path.unlink(missing_ok=True)
    for path in base.parent.glob(f"{glob.escape(name)}*.safetensors"):
        if path.name == keep:
            continue
        middle = path.name[len(name):-len(".safetensors")]
        # NAME.safetensors (the old naming) or NAME.<16 hex>.safetensors, nothing else
        if middle == "" or (len(middle) == 17 and middle[0] == "."
                            and all(c in "0123456789abcdef" for c in middle[1:])):
            path.unlink(missing_ok=True)


def repair(base: Path) -> bool:
    """Finish what an interrupted save of checkpoint ``base`` left: put a complete temp JSON in
    place of an inconsistent pair, then :func:`tidy`. Leaves a checkpoint it cannot make sense of
    alone (never deletes the only copy). Returns whether ``base`` is a complete checkpoint."""
    json_path = with_ext(base, ".json")
    try:
        meta = read_meta(json_path) if json_path.is_file() else None
    except CheckpointError:
        return False
    if meta is None or _verified(json_path, meta) is not None:
        rescued = _interrupted_save(json_path)
        if rescued is None:
            return False
        os.replace(rescued[0], json_path)
        meta = rescued[1]
    tidy(with_ext(base, ""), keep=meta["tensors"])
    return True


def remove_checkpoint(base: Path) -> None:
    """Delete checkpoint ``base`` (its JSON first, so it is never half there)."""
    with_ext(base, ".json").unlink(missing_ok=True)
    tidy(base, keep=None)


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
    """Commit checkpoint ``path``: ``path.<hash>.safetensors``, then ``path.json`` naming it
    (see the module docstring for why a crash at any instant is safe); returns the JSON path."""
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
    json_path = with_ext(base, ".json")
    tmp, digest = _write_tensors(json_path, tensors)
    _step("tensors-written", json_path)
    tensor_path = with_ext(base, f".{digest[:16]}.safetensors")
    move_into_place(tmp, tensor_path)
    _step("tensors-renamed", json_path)
    meta["sha256"], meta["tensors"] = digest, tensor_path.name
    atomic_write_json(json_path, meta)  # the commit point
    _step("json-renamed", json_path)
    tidy(with_ext(base, ""), keep=tensor_path.name)
    _step("tidied", json_path)
    return json_path


def read_meta(json_path: Path) -> dict[str, Any]:
    """A checkpoint's JSON, checked to be one (its tensors are not read)."""
    try:
        meta = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint {json_path} is not valid JSON ({err})") from None
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {json_path}: {err.strerror}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{json_path} is not a dmnn checkpoint (format {FORMAT} expected)")
    name = meta.get("tensors")
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise CheckpointError(f"{json_path} names no tensor file ('tensors' must be a file name "
                              f"beside it, got {name!r})")
    return meta


def _verified(json_path: Path, meta: dict[str, Any]) -> str | None:
    """Why the tensor file ``meta`` names is unusable, or None when it is complete."""
    tensor_path = json_path.parent / meta["tensors"]
    if not tensor_path.is_file():
        return f"checkpoint tensors {tensor_path} are missing"
    try:
        digest = _sha256(tensor_path)
    except OSError as err:
        return f"cannot read {tensor_path}: {err.strerror}"
    if digest != meta.get("sha256"):
        return f"checkpoint tensors {tensor_path} do not match their hash: corrupt"
    return None


def _interrupted_save(json_path: Path) -> tuple[Path, dict[str, Any]] | None:
    """A complete checkpoint that an interrupted save left as a temp JSON beside ``json_path``
    (the newest one whose tensors check out), or None."""
    found = []
    for tmp in json_path.parent.glob(f".{glob.escape(json_path.name)}.*.tmp"):
        try:  # tensor temp files share the prefix: only small files that open a JSON object
            if tmp.stat().st_size > 1 << 26:
                continue
            with open(tmp, "rb") as fh:
                if fh.read(1) != b"{":
                    continue
            meta = read_meta(tmp)
        except (OSError, CheckpointError):
            continue
        if _verified(json_path, meta) is None:
            found.append((tmp.stat().st_mtime, tmp, meta))
    return max(found, key=lambda f: f[0])[1:] if found else None


def recoverable(json_path: Path) -> bool:
    """Whether a crash left checkpoint ``json_path`` restorable though it is not in place."""
    return _interrupted_save(json_path) is not None


def read_checkpoint(
    path: str | Path, *, repair: bool = False
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a checkpoint given its .json, .safetensors or base path.

    If the pair is inconsistent because a save was interrupted (a checkpoint written by an
    older dmnn could be left so) and that save's complete JSON sits beside it as a temp file,
    that one is used; ``repair`` also renames it into place (what ``--resume`` does)."""
    json_path = with_ext(Path(path), ".json")
    if json_path.is_dir():
        raise CheckpointError(f"{json_path} is a folder: pass the .json written by `dmnn train`")
    if json_path.is_file():
        meta = read_meta(json_path)
        problem = _verified(json_path, meta)
    else:  # (a first save killed before its JSON rename leaves only the temp JSON)
        problem = f"checkpoint {json_path} not found: pass the .json written by `dmnn train`"
    if problem is not None:
        rescued = _interrupted_save(json_path)
        if rescued is None:
            raise CheckpointError(problem)
        tmp, meta = rescued
        if repair:
            os.replace(tmp, json_path)
    tensor_path = json_path.parent / meta["tensors"]
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


def load_matching(model: nn.Module, tensors: dict[str, torch.Tensor], source: str = "") -> int:
    """Warm start: copy every checkpoint tensor whose name and shape match into ``model``.

    Every tensor outside the gates must be matched (a warm start that silently left a conv at
    its random init would be a different experiment); the gates keep their initialisation, and
    checkpoint tensors the model lacks (a static net's nothing, a twin's nothing) are ignored.
    Returns the number of tensors copied."""
    state = model_state(tensors)
    own = model.state_dict()
    gates = tuple(f"{name}." for name, module in model.named_modules() if isinstance(module, Gate))
    needed = [k for k in own if not k.startswith(gates)]
    absent = [k for k in needed if k not in state]
    wrong = [k for k in needed if k in state and state[k].shape != own[k].shape]
    if absent or wrong:
        first = wrong[0] if wrong else ""
        detail = f"missing {absent[0]}" if absent else (
            f"{first} is {tuple(state[first].shape)}, the model's {tuple(own[first].shape)}")
        raise CheckpointError(
            f"--init-from {source}: its weights do not fit the model ({detail}; {len(absent)} "
            f"missing, {len(wrong)} reshaped): warm-start dmnn_* from a twin_* run with the same "
            "--sub-blocks, a single-path method from its static backbone")
    copied = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(copied, strict=False)
    return len(copied)


def warm_start(model: nn.Module, path: str | Path) -> int:
    """:func:`load_matching` from a checkpoint (.json, base path) or a run folder (its last)."""
    p = Path(path)
    if p.is_dir():
        p = p / "last.json"
    if not with_ext(p, ".json").is_file():
        raise CheckpointError(f"--init-from {path}: no checkpoint there: pass a run folder of "
                              "`dmnn train` or the .json of one of its checkpoints")
    _, tensors = read_checkpoint(p)
    return load_matching(model, tensors, str(path))
