"""Atomic file writes: a crash at any instant leaves the old file or the new one, never half.

Every file dmnn writes (config, metrics, checkpoints, summaries, figures, reports) goes through
here: written to a temp file in the same folder (so the rename is atomic), flushed to disk,
then renamed over the target. The checkpoint format (:mod:`dmnn.train.checkpoint`) builds its
two-file commit on these.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import TrainingError, UsageError


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """A failed write (a full disk, a file-size limit, a read-only folder) as one line naming
    the path, instead of a traceback."""
    try:
        yield
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            why = "the disk is full"
        elif err.errno == errno.EFBIG:
            why = "a file-size limit was reached"
        else:
            why = err.strerror or str(err)
        raise TrainingError(f"cannot write {path}: {why}") from None


def umask_mode() -> int:
    """The mode a plain ``open()`` would give a new file (0666 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def temp_beside(path: Path) -> tuple[int, str]:
    """A temp file next to ``path`` (same filesystem, so the rename is atomic), mode 0666&~umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, umask_mode())
    return fd, tmp


def move_into_place(tmp: str, path: Path) -> None:
    """Rename a finished temp file to ``path``; the temp file never outlives a failed rename."""
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path, write: Callable[[str], None]) -> Path:
    """``write(temp path)`` fills a temp file beside ``path`` (a library that writes by file
    name: matplotlib, safetensors); it is flushed to disk and renamed over ``path``."""
    fd, tmp = temp_beside(path)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, umask_mode())  # some writers recreate the file 0600
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    move_into_place(tmp, path)
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over ``path``."""
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json_input(path: str | Path, option: str, hint: str) -> Any:
    """The JSON a command-line ``option`` names; a missing or unreadable file is a one-line
    usage error that ends with ``hint`` (what to give instead)."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{option} {p}: no such file; {hint}")
    try:
        return json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{option} {p} is not readable JSON ({exc}); {hint}") from None


def with_ext(base: str | Path, ext: str) -> Path:
    """``base`` + ``ext``, after dropping a .json/.safetensors ending; other dots are part of the
    name (Path.with_suffix would turn "run/epoch.1" into "run/epoch.json")."""
    name = str(base).removesuffix(".json").removesuffix(".safetensors")
    return Path(name + ext)
