"""CIFAR-10 / CIFAR-100 from the standard "python version" pickle layout, never downloaded.

Why: the official archives are Python pickles, and ``pickle.load`` on a file from the internet can
run arbitrary code. Files are decoded with :class:`RestrictedUnpickler`, which resolves only the
few numpy names an array needs. The data may be a directory (``data_batch_1..5``, ``test_batch``,
``batches.meta`` / ``train``, ``test``, ``meta``), a parent folder holding the extracted folder or
the archive, or the ``.tar.gz`` itself, read in memory without extracting to disk.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from dmnn.data.arrays import ArraySplit
from dmnn.errors import DataError

CifarVariant = Literal["cifar10", "cifar100"]

IMAGE_SHAPE = (3, 32, 32)
_ROW = 3 * 32 * 32


@dataclass(frozen=True)
class CifarLayout:
    """File names and label keys of one CIFAR variant's pickle layout."""

    key: str
    title: str
    train: tuple[str, ...]
    test: str
    meta: str
    folder: str
    archive: str
    label_key: str
    names_key: str
    num_classes: int
    coarse_label_key: str | None = None
    coarse_names_key: str | None = None
    num_coarse: int | None = None

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, self.test, self.meta)


CIFAR10 = CifarLayout(
    key="cifar10",
    title="CIFAR-10",
    train=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test="test_batch",
    meta="batches.meta",
    folder="cifar-10-batches-py",
    archive="cifar-10-python.tar.gz",
    label_key="labels",
    names_key="label_names",
    num_classes=10,
)
CIFAR100 = CifarLayout(
    key="cifar100",
    title="CIFAR-100",
    train=("train",),
    test="test",
    meta="meta",
    folder="cifar-100-python",
    archive="cifar-100-python.tar.gz",
    label_key="fine_labels",
    names_key="fine_label_names",
    num_classes=100,
    coarse_label_key="coarse_labels",
    coarse_names_key="coarse_label_names",
    num_coarse=20,
)
LAYOUTS: dict[str, CifarLayout] = {CIFAR10.key: CIFAR10, CIFAR100.key: CIFAR100}


# --------------------------------------------------------------------------- restricted unpickling


def _numpy_attr(module: str, name: str) -> Any:
    """Resolve a numpy internal under its numpy-2 name, falling back to the numpy-1 one."""
    import importlib

    for candidate in (module.replace("numpy.core", "numpy._core"), module):
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    raise DataError(f"this numpy has no {module}.{name}: upgrade numpy to read this file")


def _allowed() -> dict[tuple[str, str], Callable[[], Any]]:
    recon = ("numpy._core.multiarray", "_reconstruct")
    frombuf = ("numpy._core.numeric", "_frombuffer")
    return {
        # ndarray.__reduce__ (pickle protocols 0-4), written by numpy 1.x and 2.x.
        ("numpy.core.multiarray", "_reconstruct"): lambda: _numpy_attr(*recon),
        ("numpy._core.multiarray", "_reconstruct"): lambda: _numpy_attr(*recon),
        # ndarray.__reduce_ex__ with protocol 5.
        ("numpy.core.numeric", "_frombuffer"): lambda: _numpy_attr(*frombuf),
        ("numpy._core.numeric", "_frombuffer"): lambda: _numpy_attr(*frombuf),
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        # Python 3 writes bytes as _codecs.encode(str, "latin1") under protocols 0-2.
        ("_codecs", "encode"): lambda: codecs.encode,
    }


_ALLOWED = _allowed()


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a numpy array needs; anything else is refused.

    Why: a pickle can name any importable callable (``os.system``...) and have it called while
    loading. CIFAR files only ever reference numpy's array-reconstruction helpers.
    """

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        factory = _ALLOWED.get((module, name))
        if factory is None:
            raise DataError(
                f"{self.source} references {module}.{name}, which no CIFAR data file needs: "
                "refusing to load it (the file may be malicious); use the official archive"
            )
        return factory()


def restricted_loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; any failure is a ``DataError``."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), source).load()
    except DataError:
        raise
    except Exception as exc:  # corrupt pickles raise many types: EOFError, UnpicklingError, ...
        raise DataError(
            f"{source} is corrupt or truncated ({type(exc).__name__}: {exc}): replace it with a "
            "fresh copy from the official archive"
        ) from exc


# ------------------------------------------------------------------------------- file sources


@dataclass
class _Source:
    """Where the layout's files come from: a directory, or members of a tar archive."""

    description: str
    present: set[str]
    read: Callable[[str], bytes]
    where: Callable[[str], str]


def _dir_source(path: Path) -> _Source:
    def read(name: str) -> bytes:
        try:
            return (path / name).read_bytes()
        except OSError as exc:
            raise DataError(
                f"cannot read {path / name} ({exc}): check the file permissions"
            ) from exc

    present = {p.name for p in path.iterdir() if p.is_file()}
    return _Source(f"data directory {path}", present, read, lambda name: str(path / name))


def _tar_source(path: Path, wanted: set[str]) -> _Source:
    """Read the wanted members in one sequential pass (gzip streams cannot seek back cheaply)."""
    contents: dict[str, bytes] = {}
    members: dict[str, str] = {}
    try:
        with tarfile.open(path, mode="r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                base = os.path.basename(member.name)
                if base in members:
                    raise DataError(
                        f"archive {path} holds two files named {base} ({members[base]} and "
                        f"{member.name}): keep a single CIFAR layout per archive"
                    )
                members[base] = member.name
                if base in wanted:
                    handle = tar.extractfile(member)
                    if handle is None:
                        raise DataError(f"cannot read member {member.name} of archive {path}")
                    contents[base] = handle.read()
    except DataError:
        raise
    except Exception as exc:  # tarfile.ReadError, EOFError, zlib.error, OSError...
        raise DataError(
            f"archive {path} is corrupt or truncated ({type(exc).__name__}: {exc}): replace it "
            "with a fresh copy"
        ) from exc

    def read(name: str) -> bytes:
        return contents[name]

    return _Source(f"archive {path}", set(members), read, lambda name: f"{path}:{members[name]}")


def _open_source(path: Path, layout: CifarLayout, *, _depth: int = 0) -> _Source:
    required = set(layout.files)
    if not path.exists():
        raise DataError(
            f"data directory {path} does not exist: pass --data-dir pointing at the folder holding "
            f"{_listing(layout)} (or at {layout.archive}); nothing is downloaded"
        )
    if path.is_file():
        if not tarfile.is_tarfile(path):
            raise DataError(
                f"{path} is neither a directory nor a readable tar archive (corrupt or truncated?):"
                f" pass the folder holding {_listing(layout)} or the intact {layout.archive}"
            )
        source = _tar_source(path, required)
    else:
        source = _dir_source(path)
        if not required <= source.present and _depth == 0:
            # Accept the parent folder of the extracted layout or of the archive.
            if (path / layout.folder).is_dir():
                return _open_source(path / layout.folder, layout, _depth=1)
            if (path / layout.archive).is_file():
                return _open_source(path / layout.archive, layout, _depth=1)
        if not any(path.iterdir()):
            raise DataError(
                f"data directory {path} is empty: put the {layout.title} python files "
                f"({_listing(layout)}) or {layout.archive} there; nothing is downloaded"
            )
    missing = sorted(required - source.present)
    if missing:
        for other in LAYOUTS.values():
            if other is not layout and set(other.files) <= source.present:
                raise DataError(
                    f"{source.description} holds {other.title} files, not {layout.title}: use "
                    f"dataset '{other.key}' or point --data-dir at the {layout.title} folder"
                )
        raise DataError(
            f"{source.description} is missing {layout.title} files {', '.join(missing)}: expected "
            f"{_listing(layout)} (the python pickle layout of {layout.archive})"
        )
    return source


def _listing(layout: CifarLayout) -> str:
    if len(layout.train) > 1:
        train = f"{layout.train[0][:-1]}1..{len(layout.train)}"
    else:
        train = layout.train[0]
    return f"{train}, {layout.test} and {layout.meta}"


# ------------------------------------------------------------------------------------- parsing


def _as_str(value: Any) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def _load_dict(source: _Source, name: str) -> dict[str, Any]:
    where = source.where(name)
    obj = restricted_loads(source.read(name), where)
    if not isinstance(obj, dict):
        raise DataError(
            f"{where} holds a {type(obj).__name__}, not the dict of a CIFAR pickle: wrong file?"
        )
    return {_as_str(k): v for k, v in obj.items()}


def _get(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise DataError(
            f"{where} has no '{key}' entry (found {', '.join(sorted(d)) or 'nothing'}): "
            "is this the right CIFAR variant?"
        )
    return d[key]


def _names(meta: dict[str, Any], key: str, expected: int, where: str) -> list[str]:
    raw = _get(meta, key, where)
    if not isinstance(raw, list | tuple | np.ndarray) or len(raw) != expected:
        got = len(raw) if hasattr(raw, "__len__") else type(raw).__name__
        raise DataError(f"{where} '{key}' should list {expected} names, got {got}: wrong file?")
    return [_as_str(n) for n in raw]


def _labels(batch: dict[str, Any], key: str, n: int, num: int, where: str) -> np.ndarray:
    raw = _get(batch, key, where)
    try:
        arr = np.asarray(raw)
    except Exception as exc:
        raise DataError(f"{where} '{key}' is not a list of integers ({exc})") from exc
    if arr.ndim != 1 or arr.shape[0] != n or arr.dtype.kind not in "iu":
        raise DataError(
            f"{where} '{key}' should hold {n} integer labels (one per image), got dtype "
            f"{arr.dtype} with shape {arr.shape}: the file is damaged"
        )
    if n and (int(arr.min()) < 0 or int(arr.max()) >= num):
        raise DataError(
            f"{where} '{key}' range {int(arr.min())}..{int(arr.max())} is outside 0..{num - 1}: "
            "the file is damaged or from another dataset"
        )
    return arr.astype(np.int64)


def _images(batch: dict[str, Any], where: str) -> np.ndarray:
    data = _get(batch, "data", where)
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != _ROW:
        shape = data.shape if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(
            f"{where} 'data' should be an N x {_ROW} uint8 array (32x32 RGB rows), got {shape}: "
            "the file is damaged or not CIFAR"
        )
    if data.dtype != np.uint8:
        if data.dtype.kind not in "iu" or (data.size and (data.min() < 0 or data.max() > 255)):
            raise DataError(f"{where} 'data' has dtype {data.dtype}, expected 0..255 uint8 pixels")
        data = data.astype(np.uint8)
    return data


def _read_split(source: _Source, names: tuple[str, ...], layout: CifarLayout) -> dict[str, Any]:
    images, labels, coarse = [], [], []
    for name in names:
        where = source.where(name)
        batch = _load_dict(source, name)
        data = _images(batch, where)
        n = data.shape[0]
        images.append(data)
        labels.append(_labels(batch, layout.label_key, n, layout.num_classes, where))
        if layout.coarse_label_key is not None and layout.num_coarse is not None:
            coarse.append(_labels(batch, layout.coarse_label_key, n, layout.num_coarse, where))
    out: dict[str, Any] = {
        "images": torch.from_numpy(np.concatenate(images).reshape(-1, *IMAGE_SHAPE)),
        "labels": torch.from_numpy(np.concatenate(labels)),
    }
    if coarse:
        out["coarse_labels"] = torch.from_numpy(np.concatenate(coarse))
    return out


def load_cifar(
    path: str | os.PathLike[str], variant: CifarVariant
) -> tuple[ArraySplit, ArraySplit]:
    """Load ``(train, test)`` of CIFAR-10 or CIFAR-100 from a directory or a ``.tar.gz``.

    ``path`` may be the folder holding the pickles, its parent (holding ``cifar-10-batches-py/``
    or ``cifar-10-python.tar.gz``), or the archive itself. The optional per-image ``filenames``
    and ``batch_label`` keys are ignored.
    """
    if variant not in LAYOUTS:
        raise DataError(f"unknown CIFAR variant {variant!r}: use one of {', '.join(LAYOUTS)}")
    layout = LAYOUTS[variant]
    source = _open_source(Path(path).expanduser(), layout)
    meta_where = source.where(layout.meta)
    meta = _load_dict(source, layout.meta)
    class_names = _names(meta, layout.names_key, layout.num_classes, meta_where)
    coarse_names = None
    if layout.coarse_names_key is not None and layout.num_coarse is not None:
        coarse_names = _names(meta, layout.coarse_names_key, layout.num_coarse, meta_where)
    splits = []
    for files in (layout.train, (layout.test,)):
        arrays = _read_split(source, files, layout)
        splits.append(
            ArraySplit(
                images=arrays["images"],
                labels=arrays["labels"],
                class_names=list(class_names),
                coarse_labels=arrays.get("coarse_labels"),
                coarse_names=None if coarse_names is None else list(coarse_names),
            )
        )
    return splits[0], splits[1]


def load_cifar10(path: str | os.PathLike[str]) -> tuple[ArraySplit, ArraySplit]:
    """``(train, test)`` of CIFAR-10 (50000 / 10000 images for the official files)."""
    return load_cifar(path, "cifar10")


def load_cifar100(path: str | os.PathLike[str]) -> tuple[ArraySplit, ArraySplit]:
    """``(train, test)`` of CIFAR-100 with fine labels and the 20 coarse superclass labels."""
    return load_cifar(path, "cifar100")
