"""Entry point of the data layer: ``load_dataset(name, data_dir, ...) -> DataBundle``.

Why: the training engine asks for a dataset by name and gets loaders with one interface plus the
metadata a model needs (classes, channels, input size, normalisation, category map); it never
branches on which dataset it is. Nothing is ever downloaded: CIFAR and ImageFolder data must be on
disk already (``--data-dir``); ``digits`` ships inside scikit-learn.

Default category maps (``categories=None``): CIFAR-100 -> its 20 coarse superclasses; CIFAR-10 ->
the documented K=4 grouping (:mod:`dmnn.data.categories`); digits -> k-means with K=3;
ImageFolder -> k-means with K=round(sqrt(num_classes)). An int K (or a digit string) -> k-means
with K on class-mean images; ``"auto"`` -> k-means with the dataset's default K; anything else is
read as a path to a category JSON file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dmnn.data.arrays import ArraySplit
from dmnn.data.categories import (
    CategoryMap,
    cifar10_default_categories,
    class_mean_features,
    coarse_label_categories,
    imagenet_categories,
    kmeans_categories,
    load_category_json,
)
from dmnn.data.cifar import load_cifar
from dmnn.data.digits import load_digits_splits
from dmnn.data.imagefolder import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    ImageFolderDataset,
    imagefolder_class_features,
    scan_imagefolder,
    train_transform,
)
from dmnn.data.loaders import AugmentConfig, BatchLoader, TensorBatchLoader, TorchBatchLoader
from dmnn.errors import CategoryError, DataError

DATASETS = ("digits", "cifar10", "cifar100", "imagefolder")

# Standard per-channel train-set statistics (0..1 pixel units).
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)

CategorySpec = str | int | os.PathLike[str] | None


@dataclass
class DatasetSpec:
    """What a model and a checkpoint need to know about the data."""

    name: str
    num_classes: int
    in_chans: int
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str]
    category_map: CategoryMap
    num_train: int = 0
    num_test: int = 0

    @property
    def num_categories(self) -> int:
        return self.category_map.num_categories

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready metadata (e.g. to store next to a checkpoint)."""
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "in_chans": self.in_chans,
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "class_names": list(self.class_names),
            "category_map": self.category_map.to_dict(),
            "num_train": self.num_train,
            "num_test": self.num_test,
        }


@dataclass
class DataBundle:
    """Train/test loaders (same ``Batch`` interface for every dataset) plus the spec."""

    spec: DatasetSpec
    train: BatchLoader
    test: BatchLoader
    extras: dict[str, Any] = field(default_factory=dict)
    holdout: BatchLoader | None = None
    """Training images kept out of training (``holdout=N``), served as the test split is:
    what gate calibration chooses on when there are any."""

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def in_chans(self) -> int:
        return self.spec.in_chans

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    @property
    def mean(self) -> tuple[float, ...]:
        return self.spec.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.spec.std

    @property
    def class_names(self) -> list[str]:
        return self.spec.class_names

    @property
    def category_map(self) -> CategoryMap:
        return self.spec.category_map

    def plain_train_subset(self, n: int, batch_size: int, seed: int = 0) -> BatchLoader:
        """Up to ``n`` training samples as the test split is served (no augmentation, every
        sample once): what post-training calibration measures on without seeing test data."""
        if isinstance(self.train, TorchBatchLoader):
            assert isinstance(self.test, TorchBatchLoader)
            eval_tf = self.test.dataset.transform
            return self.train.plain_subset(n, batch_size, seed, transform=eval_tf)
        return self.train.plain_subset(n, batch_size, seed)

    @property
    def num_categories(self) -> int:
        return self.spec.category_map.num_categories


# ------------------------------------------------------------------------------ categories


def resolve_categories(
    categories: CategorySpec,
    *,
    class_names: list[str],
    default: Callable[[], CategoryMap],
    default_k: int,
    features: Callable[[], np.ndarray],
    seed: int = 0,
) -> CategoryMap:
    """Turn the ``categories`` argument into a :class:`CategoryMap` (see module docstring)."""
    if categories is None:
        return default()
    if isinstance(categories, bool):
        raise CategoryError(
            f"categories must be None, an int K, 'auto' or a .json path, got {categories}"
        )
    if isinstance(categories, int):
        return kmeans_categories(features(), categories, seed=seed)
    text = os.fspath(categories).strip()
    if text.lower() in ("", "default"):
        return default()
    if text.lower() == "none":  # one category for every class: for models that use none
        return CategoryMap([0] * len(class_names), ["all"])
    if text.lower() in ("auto", "kmeans"):
        return kmeans_categories(features(), default_k, seed=seed)
    if text.lstrip("+-").isdigit():
        return kmeans_categories(features(), int(text), seed=seed)
    path = Path(text).expanduser()
    if not path.is_file():
        raise CategoryError(
            f"categories {text!r} is neither an int K, 'default', 'auto', nor an existing .json "
            "file: pass one of those"
        )
    return load_category_json(path, class_names)


# --------------------------------------------------------------------------------- loading


def _require_dir(name: str, data_dir: str | os.PathLike[str] | None, what: str) -> Path:
    if data_dir is None:
        raise DataError(
            f"dataset '{name}' needs --data-dir pointing at {what}; nothing is downloaded "
            "(use dataset 'digits' to run without any files)"
        )
    return Path(data_dir).expanduser()


def holdout_order(n: int, holdout: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held out) indices of ``n`` training samples: a seeded ``holdout`` of them,
    each side in ascending order."""
    if holdout >= n:
        raise DataError(f"--holdout {holdout} leaves no training images (the training split "
                        f"has {n}): hold out fewer")
    g = torch.Generator().manual_seed(seed + 2)
    order = torch.randperm(n, generator=g)
    return order[holdout:].sort().values, order[:holdout].sort().values


def _limit(split: ArraySplit, n: int | None, seed: int) -> ArraySplit:
    if n is None or n >= len(split):
        return split
    if n < 1:
        raise DataError(f"sample limit must be >= 1, got {n}")
    g = torch.Generator().manual_seed(seed)
    return split.select(torch.randperm(len(split), generator=g)[:n].sort().values)


def _in_memory_bundle(
    name: str,
    train: ArraySplit,
    test: ArraySplit,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    default: Callable[[], CategoryMap],
    default_k: int,
    augment: AugmentConfig | None,
    categories: CategorySpec,
    opts: dict[str, Any],
) -> DataBundle:
    seed = opts["seed"]
    cmap = resolve_categories(
        categories,
        class_names=train.class_names,
        default=default,
        default_k=default_k,
        features=lambda: class_mean_features(train.images, train.labels, train.num_classes),
        seed=seed,
    )
    if cmap.num_classes != train.num_classes:
        raise CategoryError(
            f"category map covers {cmap.num_classes} classes but {name} has {train.num_classes}"
        )
    train = _limit(train, opts["max_train_samples"], seed)
    test = _limit(test, opts["max_test_samples"], seed + 1)
    common = {"mean": mean, "std": std, "device": opts["device"]}
    holdout_loader = None
    if opts["holdout"]:
        kept, held = holdout_order(len(train), opts["holdout"], seed)
        held_split, train = train.select(held), train.select(kept)
        holdout_loader = TensorBatchLoader(
            held_split, cmap(held_split.labels), batch_size=opts["eval_batch_size"],
            shuffle=False, seed=seed, **common)
    train_loader = TensorBatchLoader(
        train,
        cmap(train.labels),
        batch_size=opts["batch_size"],
        shuffle=True,
        drop_last=opts["drop_last"],
        augment=augment if opts["augment"] else None,
        copies=opts["copies"],
        seed=seed,
        **common,
    )
    test_loader = TensorBatchLoader(
        test,
        cmap(test.labels),
        batch_size=opts["eval_batch_size"],
        shuffle=False,
        seed=seed,
        **common,
    )
    spec = DatasetSpec(
        name=name,
        num_classes=train.num_classes,
        in_chans=train.in_chans,
        input_size=train.input_size,
        mean=mean,
        std=std,
        class_names=list(train.class_names),
        category_map=cmap,
        num_train=len(train),
        num_test=len(test),
    )
    return DataBundle(spec, train_loader, test_loader, holdout=holdout_loader)


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    x = images.to(torch.float64) / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3))
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    categories: CategorySpec = None,
    batch_size: int = 128,
    eval_batch_size: int | None = None,
    num_workers: int = 0,
    seed: int = 0,
    augment: bool = True,
    copies: int = 1,
    drop_last: bool = True,
    image_size: int = 224,
    device: torch.device | str | None = None,
    pin_memory: bool = False,
    max_train_samples: int | None = None,
    max_test_samples: int | None = None,
    holdout: int = 0,
    download: bool = False,
) -> DataBundle:
    """Load ``name`` (one of :data:`DATASETS`) and build its train/test loaders.

    ``data_dir`` is ignored for ``digits``. ``batch_size``/``drop_last``/``augment``/``copies``
    apply to the training loader; the test loader is unshuffled, unaugmented, keeps every sample.
    ``num_workers``/``pin_memory``/``image_size`` only matter for ``imagefolder``; ``device``
    only for in-memory datasets (the whole split is moved there once). ``max_*_samples`` take a
    seeded random subset (after building the category map on the full training split).
    ``holdout``: that many of the (limited) training images are kept out of training and served
    unaugmented as ``DataBundle.holdout``.
    """
    if download:
        raise DataError(
            "downloading is not supported: dmnn never touches the network; fetch the dataset "
            "yourself and pass --data-dir (or use dataset 'digits', which ships with scikit-learn)"
        )
    key = str(name).strip().lower().replace("-", "").replace("_", "")
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    opts: dict[str, Any] = {
        "batch_size": batch_size,
        "eval_batch_size": eval_batch_size or batch_size,
        "seed": seed,
        "augment": augment,
        "copies": copies,
        "drop_last": drop_last,
        "device": device,
        "max_train_samples": max_train_samples,
        "max_test_samples": max_test_samples,
        "holdout": holdout,
    }

    if key == "digits":
        train, test = load_digits_splits(seed=0)
        mean, std = _channel_stats(train.images)
        # 8x8 digits: a 1-pixel shift; no flips (a mirrored digit is another glyph).
        return _in_memory_bundle(
            key,
            train,
            test,
            mean=mean,
            std=std,
            default=lambda: kmeans_categories(
                class_mean_features(train.images, train.labels, 10), 3, seed=seed
            ),
            default_k=3,
            augment=AugmentConfig(padding=1, flip=False),
            categories=categories,
            opts=opts,
        )

    if key in ("cifar10", "cifar100"):
        folder = "the folder holding data_batch_1..5, test_batch and batches.meta"
        if key == "cifar100":
            folder = "the folder holding train, test and meta (cifar-100-python)"
        path = _require_dir(key, data_dir, folder)
        train, test = load_cifar(path, key)  # type: ignore[arg-type]
        if key == "cifar10":
            mean, std = CIFAR10_MEAN, CIFAR10_STD

            def default() -> CategoryMap:
                return cifar10_default_categories(train.class_names)

            default_k = 4
        else:
            mean, std = CIFAR100_MEAN, CIFAR100_STD

            def default() -> CategoryMap:
                assert train.coarse_labels is not None and train.coarse_names is not None
                return coarse_label_categories(
                    train.labels, train.coarse_labels, train.coarse_names, train.num_classes
                )

            default_k = 20
        return _in_memory_bundle(
            key,
            train,
            test,
            mean=mean,
            std=std,
            default=default,
            default_k=default_k,
            augment=AugmentConfig(padding=4, flip=True),
            categories=categories,
            opts=opts,
        )

    return _imagefolder_bundle(
        _require_dir(key, data_dir, "a folder holding train/<class>/ and val/<class>/ images"),
        categories=categories,
        image_size=image_size,
        num_workers=num_workers,
        pin_memory=pin_memory,
        opts=opts,
    )


def _imagefolder_bundle(
    root: Path,
    *,
    categories: CategorySpec,
    image_size: int,
    num_workers: int,
    pin_memory: bool,
    opts: dict[str, Any],
) -> DataBundle:
    index = scan_imagefolder(root)
    num_classes = len(index.classes)
    seed = opts["seed"]
    default_k = max(1, min(num_classes, round(math.sqrt(num_classes))))

    def features() -> np.ndarray:
        return imagefolder_class_features(index.train, num_classes)

    cmap = resolve_categories(
        categories,
        class_names=index.classes,
        default=lambda: (imagenet_categories(index.classes)
                         or kmeans_categories(features(), default_k, seed=seed)),
        default_k=default_k,
        features=features,
        seed=seed,
    )
    if cmap.num_classes != num_classes:
        raise CategoryError(
            f"category map covers {cmap.num_classes} classes but {root} has {num_classes}"
        )
    train_samples = _limit_samples(index.train, opts["max_train_samples"], seed)
    val_samples = _limit_samples(index.val, opts["max_test_samples"], seed + 1)
    held_samples: list[tuple[str, int]] = []
    if opts["holdout"]:
        kept, held = holdout_order(len(train_samples), opts["holdout"], seed)
        held_samples = [train_samples[i] for i in held.tolist()]
        train_samples = [train_samples[i] for i in kept.tolist()]
    if opts["augment"]:
        train_tf: Any = train_transform(image_size, IMAGENET_MEAN, IMAGENET_STD)
    else:
        train_tf = EvalTransform(image_size, IMAGENET_MEAN, IMAGENET_STD)
    common = {"seed": seed, "num_workers": num_workers, "pin_memory": pin_memory}
    train_loader = TorchBatchLoader(
        ImageFolderDataset(train_samples, train_tf, copies=opts["copies"]),
        cmap,
        batch_size=opts["batch_size"],
        shuffle=True,
        drop_last=opts["drop_last"],
        **common,
    )
    eval_tf = EvalTransform(image_size, IMAGENET_MEAN, IMAGENET_STD)
    test_loader = TorchBatchLoader(
        ImageFolderDataset(val_samples, eval_tf), cmap, batch_size=opts["eval_batch_size"],
        shuffle=False, **common,
    )
    holdout_loader = TorchBatchLoader(
        ImageFolderDataset(held_samples, eval_tf), cmap, batch_size=opts["eval_batch_size"],
        shuffle=False, **common,
    ) if held_samples else None
    spec = DatasetSpec(
        name="imagefolder",
        num_classes=num_classes,
        in_chans=3,
        input_size=image_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        class_names=list(index.classes),
        category_map=cmap,
        num_train=len(train_samples),
        num_test=len(val_samples),
    )
    return DataBundle(spec, train_loader, test_loader, extras={"root": str(root)},
                      holdout=holdout_loader)


def _limit_samples(samples: list[tuple[str, int]], n: int | None, seed: int) -> list:
    if n is None or n >= len(samples):
        return samples
    if n < 1:
        raise DataError(f"sample limit must be >= 1, got {n}")
    g = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(samples), generator=g)[:n].sort().values.tolist()
    return [samples[i] for i in keep]
