"""load_dataset entry point, digits, and the in-memory batch loader."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dmnn.data import (
    CIFAR10_CLASSES,
    ArraySplit,
    AugmentConfig,
    Batch,
    DataError,
    TensorBatchLoader,
    load_dataset,
    load_digits_splits,
    normalize,
)


def write_cifar(root: Path, variant: str, n: int = 20) -> None:
    """Minimal CIFAR-10/100 pickles (no 'filenames' key); CIFAR-100 coarse = fine // 5."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def dump(obj: dict, name: str) -> None:
        (root / name).write_bytes(pickle.dumps(obj, protocol=2))

    if variant == "cifar10":
        for i, name in enumerate([*(f"data_batch_{j}" for j in range(1, 6)), "test_batch"]):
            labels = [(i + k) % 10 for k in range(n)]
            dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": labels}, name)
        dump({"label_names": list(CIFAR10_CLASSES)}, "batches.meta")
    else:
        for name in ("train", "test"):
            fine = np.arange(100)
            data = rng.integers(0, 256, (100, 3072), dtype=np.uint8)
            dump(
                {"data": data, "fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist()},
                name,
            )
        names = {"fine_label_names": [f"f{i}" for i in range(100)]}
        dump({**names, "coarse_label_names": [f"c{i}" for i in range(20)]}, "meta")


def index_split(n: int) -> ArraySplit:
    """Split whose label is the sample index, so batches reveal exactly which samples came."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    return ArraySplit(images, torch.arange(n), [str(i) for i in range(n)])


def loader(split: ArraySplit, **kw: object) -> TensorBatchLoader:
    opts: dict = {"mean": (0.0,), "std": (1.0,), "batch_size": 7, "shuffle": True, "seed": 0}
    opts.update(kw)
    return TensorBatchLoader(split, split.labels % 3, **opts)


# ------------------------------------------------------------------------------ load_dataset


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'mnist'.*digits, cifar10, cifar100"):
        load_dataset("mnist", None)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagefolder"])
def test_data_dir_required_nothing_downloaded(name: str) -> None:
    with pytest.raises(DataError, match=r"needs --data-dir.*nothing is downloaded"):
        load_dataset(name, None)


def test_download_refused() -> None:
    with pytest.raises(DataError, match="downloading is not supported"):
        load_dataset("digits", None, download=True)


def test_digits_bundle() -> None:
    bundle = load_dataset("digits", None, batch_size=32)
    assert (bundle.num_classes, bundle.in_chans, bundle.input_size) == (10, 1, 8)
    assert bundle.class_names == [str(i) for i in range(10)]
    assert bundle.category_map.num_categories == 3 and bundle.category_map.num_classes == 10
    assert (bundle.spec.num_train, bundle.spec.num_test) == (1437, 360)
    assert len(bundle.train) == 1437 // 32 and len(bundle.test) == -(-360 // 32)
    x, y, c = next(iter(bundle.test))
    assert x.shape == (32, 1, 8, 8) and x.dtype == torch.float32
    assert torch.equal(c, bundle.category_map(y))
    # Test images are unaugmented: normalised data is exactly normalize(raw).
    _, test = load_digits_splits()
    assert torch.allclose(x, normalize(test.images[:32], bundle.mean, bundle.std))
    total = torch.cat([b.images for b in bundle.test])
    assert abs(float(total.mean())) < 0.1 and abs(float(total.std()) - 1.0) < 0.1


def test_digits_split_is_stratified_deterministic_and_scaled() -> None:
    train, test = load_digits_splits()
    train2, test2 = load_digits_splits()
    assert torch.equal(train.labels, train2.labels) and torch.equal(test.images, test2.images)
    assert train.images.dtype == torch.uint8 and int(train.images.max()) == 255
    counts = torch.bincount(test.labels, minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37  # ~20% of ~180 per class
    assert len(train) + len(test) == 1797


def test_categories_argument_forms(tmp_path: Path) -> None:
    assert load_dataset("digits", None, categories=5).category_map.num_categories == 5
    assert load_dataset("digits", None, categories="4").category_map.num_categories == 4
    mapping = {str(i): ("even" if i % 2 == 0 else "odd") for i in range(10)}
    path = tmp_path / "parity.json"
    path.write_text(json.dumps(mapping))
    cmap = load_dataset("digits", None, categories=str(path)).category_map
    assert cmap.names == ["even", "odd"] and cmap.class_to_category == [0, 1] * 5
    with pytest.raises(DataError, match=r"1 <= K <= 10"):
        load_dataset("digits", None, categories=11)
    with pytest.raises(DataError, match="neither an int K"):
        load_dataset("digits", None, categories=str(tmp_path / "nope.json"))


def test_cifar10_and_cifar100_bundles(tmp_path: Path) -> None:
    write_cifar(tmp_path / "c10", "cifar10")
    b10 = load_dataset("cifar10", tmp_path / "c10", batch_size=16)
    assert (b10.num_classes, b10.in_chans, b10.input_size) == (10, 3, 32)
    assert b10.category_map.names == [
        "vehicles",
        "domestic_mammals",
        "hoofed_mammals",
        "other_animals",
    ]
    assert b10.mean == (0.4914, 0.4822, 0.4465)
    x, y, c = next(iter(b10.train))
    assert x.shape == (16, 3, 32, 32) and torch.equal(c, b10.category_map(y))
    write_cifar(tmp_path / "c100", "cifar100")
    b100 = load_dataset("cifar100", tmp_path / "c100", batch_size=16, categories=None)
    assert b100.category_map.num_categories == 20
    assert b100.category_map.class_to_category == [i // 5 for i in range(100)]
    assert b100.category_map.names[3] == "c3"


def test_same_interface_for_every_dataset(tmp_path: Path, image_folder) -> None:
    write_cifar(tmp_path / "c10", "cifar10")
    root = image_folder("imgs", classes=("a", "b"), per_class=3, size=(10, 12))
    bundles = [
        load_dataset("digits", None, batch_size=64),
        load_dataset("cifar10", tmp_path / "c10", batch_size=8),
        load_dataset("imagefolder", root, batch_size=4, image_size=8),
    ]
    for bundle in bundles:
        for split in (bundle.train, bundle.test):
            batches = list(split)
            assert len(batches) == len(split) > 0
            for batch in batches:
                assert isinstance(batch, Batch)
                assert batch.images.dim() == 4 and batch.images.dtype == torch.float32
                size = bundle.input_size
                assert batch.images.shape[1:] == (bundle.in_chans, size, size)
                assert batch.labels.dtype == torch.int64 == batch.categories.dtype
                assert int(batch.categories.max()) < bundle.category_map.num_categories


def test_max_samples_subset() -> None:
    bundle = load_dataset("digits", None, max_train_samples=100, max_test_samples=50, batch_size=10)
    assert (bundle.spec.num_train, bundle.spec.num_test) == (100, 50)
    assert len(bundle.train) == 10 and sum(len(b.labels) for b in bundle.test) == 50


# ---------------------------------------------------------------------------------- loader


def _epoch_labels(ld: TensorBatchLoader) -> list[int]:
    return [int(v) for b in ld for v in b.labels]


def test_every_sample_once_without_drop_last() -> None:
    ld = loader(index_split(30), drop_last=False)
    assert len(ld) == 5  # ceil(30 / 7)
    batches = list(ld)
    assert len(batches) == 5 and len(batches[-1].labels) == 2
    seen = [int(v) for b in batches for v in b.labels]
    assert sorted(seen) == list(range(30))
    # images follow their labels (pixel value == index)
    for b in batches:
        assert torch.equal((b.images[:, 0, 0, 0] * 255).round().long(), b.labels)
        assert torch.equal(b.categories, b.labels % 3)


def test_drop_last_gives_full_batches() -> None:
    ld = loader(index_split(30), drop_last=True)
    sizes = [len(b.labels) for b in ld]
    assert len(ld) == 4 and sizes == [7, 7, 7, 7]
    with pytest.raises(DataError, match="fewer than one batch"):
        loader(index_split(5), drop_last=True)


def test_reshuffles_between_epochs_and_reproducible() -> None:
    a, b = loader(index_split(50)), loader(index_split(50))
    a0, a1 = _epoch_labels(a), _epoch_labels(a)
    assert a0 != a1 and sorted(a0) == sorted(a1) == list(range(50))
    assert _epoch_labels(b) == a0 and _epoch_labels(b) == a1
    c = loader(index_split(50), seed=1)
    assert _epoch_labels(c) != a0
    a.set_epoch(0)
    assert _epoch_labels(a) == a0  # resuming replays the same epoch


def test_unshuffled_loader_keeps_order() -> None:
    assert _epoch_labels(loader(index_split(20), shuffle=False)) == list(range(20))


def test_augmented_loader_reproducible_and_copies() -> None:
    split = ArraySplit(
        torch.randint(0, 256, (24, 3, 8, 8), dtype=torch.uint8), torch.arange(24) % 4, list("abcd")
    )
    kw = {"mean": (0.5,) * 3, "std": (0.25,) * 3, "augment": AugmentConfig(4, True), "copies": 3}
    a = [b.images for b in loader(split, **kw)]
    b = [b.images for b in loader(split, **kw)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    first = next(iter(loader(split, **kw)))
    assert first.images.shape == (21, 3, 8, 8)
    assert torch.equal(first.labels, first.labels[:7].repeat(3))
    copies = first.images.view(3, 7, 3, 8, 8)
    assert not torch.equal(copies[0], copies[1])
