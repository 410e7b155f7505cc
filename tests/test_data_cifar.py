"""CIFAR pickle loading: directory / tar.gz layouts, restricted unpickling, bad-input errors."""

from __future__ import annotations

import gzip
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from dmnn.data import DataError, load_cifar, load_cifar10, load_cifar100
from dmnn.data.cifar import restricted_loads

CIFAR10_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
REAL_CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar-10-batches-py"


def _dump(obj: object, path: Path, protocol: int) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def write_cifar10(
    root: Path, n: int = 4, protocol: int = 2, bytes_keys: bool = False
) -> dict[str, np.ndarray]:
    """Tiny CIFAR-10 layout (n images per batch, no 'filenames' key); returns what was written."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def key(k: str) -> str | bytes:
        return k.encode() if bytes_keys else k

    train_x, train_y = [], []
    for i in range(1, 6):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        train_x.append(data)
        train_y += labels
        batch = {key("batch_label"): f"training batch {i} of 5", key("data"): data}
        batch[key("labels")] = labels
        _dump(batch, root / f"data_batch_{i}", protocol)
    test_x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    test_y = [int(v) for v in rng.integers(0, 10, size=n)]
    _dump({key("data"): test_x, key("labels"): test_y}, root / "test_batch", protocol)
    names = [s.encode() if bytes_keys else s for s in CIFAR10_NAMES]
    _dump({key("label_names"): names, key("num_vis"): 3072}, root / "batches.meta", protocol)
    return {
        "train_x": np.concatenate(train_x),
        "train_y": np.array(train_y),
        "test_x": test_x,
        "test_y": np.array(test_y),
    }


def write_cifar100(root: Path, protocol: int = 4) -> dict[str, np.ndarray]:
    """Tiny CIFAR-100 layout: 100 train images (one per fine class), 10 test; coarse = fine // 5."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    out = {}
    for split, fine in (("train", np.arange(100)), ("test", np.arange(0, 100, 10))):
        data = rng.integers(0, 256, size=(len(fine), 3072), dtype=np.uint8)
        batch = {
            "data": data,
            "fine_labels": fine.tolist(),
            "coarse_labels": (fine // 5).tolist(),
            "batch_label": split,
        }
        _dump(batch, root / split, protocol)
        out[f"{split}_x"], out[f"{split}_y"] = data, fine
    meta = {
        "fine_label_names": [f"fine{i}" for i in range(100)],
        "coarse_label_names": [f"coarse{i}" for i in range(20)],
    }
    _dump(meta, root / "meta", protocol)
    return out


def make_tar(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def _img(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x.reshape(-1, 3, 32, 32))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_directory_shapes_labels_names(tmp_path: Path, protocol: int) -> None:
    ref = write_cifar10(tmp_path / "c10", n=4, protocol=protocol)
    train, test = load_cifar10(tmp_path / "c10")
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (4, 3, 32, 32)
    assert torch.equal(train.images, _img(ref["train_x"]))
    assert torch.equal(test.images, _img(ref["test_x"]))
    assert train.labels.dtype == torch.int64
    assert train.labels.tolist() == ref["train_y"].tolist()
    assert test.labels.tolist() == ref["test_y"].tolist()
    assert train.class_names == CIFAR10_NAMES
    assert train.coarse_labels is None and train.coarse_names is None


def test_cifar10_python2_style_bytes_keys(tmp_path: Path) -> None:
    ref = write_cifar10(tmp_path / "c10", n=3, bytes_keys=True)
    train, _ = load_cifar10(tmp_path / "c10")
    assert train.class_names == CIFAR10_NAMES
    assert train.labels.tolist() == ref["train_y"].tolist()


def test_cifar100_fine_and_coarse(tmp_path: Path) -> None:
    ref = write_cifar100(tmp_path / "c100")
    train, test = load_cifar100(tmp_path / "c100")
    assert train.images.shape == (100, 3, 32, 32) and test.images.shape == (10, 3, 32, 32)
    assert torch.equal(train.images, _img(ref["train_x"]))
    assert train.labels.tolist() == list(range(100))
    assert train.coarse_labels is not None and test.coarse_labels is not None
    assert train.coarse_labels.tolist() == [i // 5 for i in range(100)]
    assert test.coarse_labels.tolist() == [i // 5 for i in range(0, 100, 10)]
    assert train.class_names[7] == "fine7" and len(train.class_names) == 100
    assert train.coarse_names is not None and train.coarse_names[19] == "coarse19"


@pytest.mark.parametrize("variant", ["cifar10", "cifar100"])
def test_tar_gz_equals_directory(tmp_path: Path, variant: str) -> None:
    folder = tmp_path / ("cifar-10-batches-py" if variant == "cifar10" else "cifar-100-python")
    (write_cifar10 if variant == "cifar10" else write_cifar100)(folder)
    archive = make_tar(folder, tmp_path / "data.tar.gz")
    from_dir = load_cifar(folder, variant)  # type: ignore[arg-type]
    from_tar = load_cifar(archive, variant)  # type: ignore[arg-type]
    for a, b in zip(from_dir, from_tar, strict=True):
        assert torch.equal(a.images, b.images)
        assert torch.equal(a.labels, b.labels)
        assert a.class_names == b.class_names
        assert a.coarse_names == b.coarse_names


def test_parent_folder_with_extracted_folder_or_archive(tmp_path: Path) -> None:
    ref = write_cifar10(tmp_path / "a" / "cifar-10-batches-py")
    train, _ = load_cifar10(tmp_path / "a")  # parent of the extracted folder
    assert train.labels.tolist() == ref["train_y"].tolist()
    (tmp_path / "b").mkdir()
    make_tar(tmp_path / "a" / "cifar-10-batches-py", tmp_path / "b" / "cifar-10-python.tar.gz")
    train_b, _ = load_cifar10(tmp_path / "b")  # parent of the archive
    assert torch.equal(train.images, train_b.images)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_os_system(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"data": _Evil(marker), "labels": [0]}, protocol=2)
    with pytest.raises(DataError, match=r"refusing to load") as err:
        restricted_loads(payload, "evil.pkl")
    assert "system" in str(err.value) and "evil.pkl" in str(err.value)
    assert not marker.exists()

    # Same payload planted in a CIFAR folder: the loader refuses it too, naming the file.
    write_cifar10(tmp_path / "c10")
    (tmp_path / "c10" / "data_batch_3").write_bytes(payload)
    with pytest.raises(DataError, match=r"data_batch_3.*refusing"):
        load_cifar10(tmp_path / "c10")
    assert not marker.exists()


def test_restricted_unpickler_refuses_builtins_eval() -> None:
    class Eval:
        def __reduce__(self) -> tuple:
            return (eval, ("1+1",))

    with pytest.raises(DataError, match=r"builtins\.eval"):
        restricted_loads(pickle.dumps(Eval()), "x")


def test_restricted_unpickler_still_reads_plain_numpy() -> None:
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for protocol in range(0, 6):
        out = restricted_loads(pickle.dumps({"a": arr}, protocol=protocol))
        assert np.array_equal(out["a"], arr) and out["a"].dtype == np.uint8


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist.*--data-dir") as err:
        load_cifar10(tmp_path / "nope")
    assert "\n" not in str(err.value)


def test_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty"):
        load_cifar10(tmp_path / "empty")


def test_wrong_layout_cifar100_files_as_cifar10(tmp_path: Path) -> None:
    write_cifar100(tmp_path / "c100")
    with pytest.raises(DataError, match=r"CIFAR-100 files.*cifar100"):
        load_cifar10(tmp_path / "c100")


def test_missing_one_batch_file(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "c10")
    (tmp_path / "c10" / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"missing CIFAR-10 files data_batch_3"):
        load_cifar10(tmp_path / "c10")


def test_truncated_batch_file(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "c10")
    path = tmp_path / "c10" / "data_batch_2"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=r"data_batch_2 is corrupt or truncated"):
        load_cifar10(tmp_path / "c10")


def test_truncated_archive(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, n=64)
    archive = make_tar(folder, tmp_path / "c.tar.gz")
    raw = archive.read_bytes()
    archive.write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(DataError, match=r"c\.tar\.gz.*(corrupt|truncated)"):
        load_cifar10(archive)


def test_file_that_is_not_an_archive(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(DataError, match=r"neither a directory nor a readable tar archive"):
        load_cifar10(path)


def test_label_out_of_range(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "c10", n=2)
    data = np.zeros((2, 3072), dtype=np.uint8)
    _dump({"data": data, "labels": [0, 10]}, tmp_path / "c10" / "test_batch", 2)
    with pytest.raises(DataError, match=r"test_batch 'labels' range 0\.\.10 is outside 0\.\.9"):
        load_cifar10(tmp_path / "c10")


def test_wrong_data_shape(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "c10", n=2)
    _dump(
        {"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, tmp_path / "c10" / "test_batch", 2
    )
    with pytest.raises(DataError, match=r"test_batch 'data' should be an N x 3072"):
        load_cifar10(tmp_path / "c10")


def test_label_count_mismatch(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "c10", n=2)
    _dump(
        {"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, tmp_path / "c10" / "test_batch", 2
    )
    with pytest.raises(DataError, match=r"should hold 2 integer labels"):
        load_cifar10(tmp_path / "c10")


def test_gzip_member_not_a_pickle(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "c10", n=2)
    (tmp_path / "c10" / "batches.meta").write_bytes(gzip.compress(b"garbage"))
    with pytest.raises(DataError, match=r"batches\.meta is corrupt or truncated"):
        load_cifar10(tmp_path / "c10")


@pytest.mark.skipif(not REAL_CIFAR10.is_dir(), reason="real CIFAR-10 not present in ../shared")
def test_real_cifar10_statistics() -> None:
    train, test = load_cifar10(REAL_CIFAR10)
    assert len(train) == 50000 and len(test) == 10000
    assert torch.bincount(train.labels).tolist() == [5000] * 10
    x = train.images[:50000:5].to(torch.float32) / 255.0
    mean = x.mean(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.tensor([0.4914, 0.4822, 0.4465]), atol=5e-3)
