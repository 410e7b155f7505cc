"""Class -> coarse-category maps that supervise the DMNN controllers.

Why: the controllers learn to route by a coarse category (K groups of classes) rather than by the
fine label. A map comes from the dataset (CIFAR-100's 20 superclasses), from a user JSON file, from
k-means on class-mean images, or from the documented CIFAR-10 grouping below.

CIFAR-10 default grouping (K=4, category order as listed):

* ``vehicles``: airplane, automobile, ship, truck
* ``domestic_mammals``: cat, dog
* ``hoofed_mammals``: deer, horse
* ``other_animals``: bird, frog

User JSON files are either a flat object mapping class name (or class index as a string) to a
category name, e.g. ``{"airplane": "vehicle", "cat": "pet", ...}`` (categories are numbered in
order of first appearance over the classes), or the full form written by
:meth:`CategoryMap.to_dict`: ``{"names": [...], "class_to_category": [...]}``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dmnn.errors import CategoryError

CIFAR10_CLASSES = (
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
)
CIFAR10_GROUPS: dict[str, tuple[str, ...]] = {
    "vehicles": ("airplane", "automobile", "ship", "truck"),
    "domestic_mammals": ("cat", "dog"),
    "hoofed_mammals": ("deer", "horse"),
    "other_animals": ("bird", "frog"),
}


def _preview(items: Sequence[Any], limit: int = 8) -> str:
    shown = ", ".join(repr(i) for i in list(items)[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


@dataclass
class CategoryMap:
    """``class_to_category[c]`` is the category index of class ``c``; ``names[k]`` names it.

    Every category must own at least one class, so ``num_categories`` is the real K.
    """

    class_to_category: list[int]
    names: list[str]

    def __post_init__(self) -> None:
        self.class_to_category = [int(c) for c in self.class_to_category]
        self.names = [str(n) for n in self.names]
        k = len(self.names)
        if not self.class_to_category:
            raise CategoryError("a category map needs at least one class")
        if k == 0:
            raise CategoryError("a category map needs at least one category name")
        if len(set(self.names)) != k:
            dups = sorted({n for n in self.names if self.names.count(n) > 1})
            raise CategoryError(f"category names must be unique, repeated: {_preview(dups)}")
        bad = [c for c in self.class_to_category if not 0 <= c < k]
        if bad:
            raise CategoryError(
                f"category indices {_preview(bad)} are outside 0..{k - 1} ({k} names)")
        unused = [self.names[i] for i in range(k) if i not in set(self.class_to_category)]
        if unused:
            raise CategoryError(
                f"categories {_preview(unused)} have no classes: every category needs a class"
            )

    @property
    def num_categories(self) -> int:
        return len(self.names)

    @property
    def num_classes(self) -> int:
        return len(self.class_to_category)

    def table(self, device: torch.device | str | None = None) -> torch.Tensor:
        """Lookup tensor (int64, ``num_classes``): ``table[label]`` is the category."""
        return torch.tensor(self.class_to_category, dtype=torch.int64, device=device)

    def __call__(self, labels: torch.Tensor) -> torch.Tensor:
        """Map a tensor of class labels to a tensor of category indices (same shape/device)."""
        return self.table(labels.device)[labels]

    def members(self) -> list[list[int]]:
        """Class indices of each category."""
        out: list[list[int]] = [[] for _ in self.names]
        for cls, cat in enumerate(self.class_to_category):
            out[cat].append(cls)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready full form, read back by :meth:`from_dict` / :func:`load_category_json`."""
        return {"names": list(self.names), "class_to_category": list(self.class_to_category)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], num_classes: int | None = None) -> CategoryMap:
        """Inverse of :meth:`to_dict`; checks the class count when ``num_classes`` is given."""
        try:
            names = data["names"]
            mapping = data["class_to_category"]
        except (KeyError, TypeError) as exc:
            raise CategoryError(
                "a category map dict needs 'names' and 'class_to_category' lists"
            ) from exc
        if not isinstance(names, list) or not isinstance(mapping, list):
            raise CategoryError("'names' and 'class_to_category' must both be JSON lists")
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in mapping):
            raise CategoryError("'class_to_category' must list integer category indices")
        if num_classes is not None and len(mapping) != num_classes:
            raise CategoryError(
                f"category map covers {len(mapping)} classes but the dataset has {num_classes}: "
                "map every class"
            )
        return cls(class_to_category=list(mapping), names=list(names))


# ------------------------------------------------------------------------------------- builders


def cifar10_default_categories(class_names: Sequence[str]) -> CategoryMap:
    """The documented K=4 CIFAR-10 grouping, in the order of ``class_names``."""
    if sorted(class_names) != sorted(CIFAR10_CLASSES):
        raise CategoryError(
            f"the default CIFAR-10 grouping needs the 10 CIFAR-10 classes, got "
            f"{_preview(list(class_names))}: pass --categories K or a JSON file instead"
        )
    group_of = {cls: i for i, members in enumerate(CIFAR10_GROUPS.values()) for cls in members}
    return CategoryMap([group_of[c] for c in class_names], list(CIFAR10_GROUPS))


def coarse_label_categories(
    fine_labels: torch.Tensor,
    coarse_labels: torch.Tensor,
    coarse_names: Sequence[str],
    num_classes: int,
) -> CategoryMap:
    """Category map read off paired fine/coarse labels (CIFAR-100 superclasses)."""
    fine = fine_labels.to(torch.int64).cpu()
    coarse = coarse_labels.to(torch.int64).cpu()
    table = torch.full((num_classes,), -1, dtype=torch.int64)
    table[fine] = coarse  # one coarse label per fine class, checked below
    if (table < 0).any():
        missing = torch.nonzero(table < 0).flatten().tolist()
        raise CategoryError(
            f"classes {_preview(missing)} never appear with a coarse label: cannot derive their "
            "category from the data; pass a category JSON file"
        )
    if not torch.equal(table[fine], coarse):
        bad = sorted(set(fine[table[fine] != coarse].tolist()))
        raise CategoryError(
            f"classes {_preview(bad)} carry more than one coarse label: the coarse labels are "
            "inconsistent"
        )
    return CategoryMap(table.tolist(), list(coarse_names))


def class_mean_features(
    images: torch.Tensor, labels: torch.Tensor, num_classes: int, chunk: int = 8192
) -> np.ndarray:
    """Mean image of every class, flattened: ``(num_classes, C*H*W)`` float64 in [0, 1] units.

    Accumulates in chunks so 50000 CIFAR images never become one big float tensor.
    """
    n = images.shape[0]
    flat_dim = int(np.prod(images.shape[1:]))
    sums = torch.zeros(num_classes, flat_dim, dtype=torch.float64)
    labels = labels.to(torch.int64).cpu()
    for start in range(0, n, chunk):
        block = images[start : start + chunk].reshape(-1, flat_dim).cpu().to(torch.float64)
        sums.index_add_(0, labels[start : start + chunk], block)
    counts = torch.bincount(labels, minlength=num_classes).to(torch.float64)
    if (counts == 0).any():
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise CategoryError(
            f"classes {_preview(missing)} have no training samples: cannot build k-means "
            "categories; pass a category JSON file"
        )
    scale = 255.0 if images.dtype == torch.uint8 else 1.0
    return (sums / counts[:, None] / scale).numpy()


def kmeans_categories(
    features: np.ndarray, k: int, *, seed: int = 0, n_init: int = 10
) -> CategoryMap:
    """Group classes by k-means on one feature vector per class (e.g. class-mean images).

    Categories are numbered by first appearance over the classes (class 0 is in category 0), so
    the result does not depend on k-means' arbitrary cluster ids. Names are ``group0..``.
    """
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 1:
        raise CategoryError(f"k-means needs one feature row per class, got shape {feats.shape}")
    n = feats.shape[0]
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= int(k) <= n:
        raise CategoryError(
            f"number of categories K must be an integer with 1 <= K <= {n} (number of classes), "
            f"got {k!r}"
        )
    k = int(k)
    if k == 1:
        raw = np.zeros(n, dtype=np.int64)
    else:
        from sklearn.cluster import KMeans

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "fewer distinct clusters" is checked below
            raw = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(feats).labels_
    order: dict[int, int] = {}
    for lab in raw.tolist():
        order.setdefault(lab, len(order))
    if len(order) != k:
        raise CategoryError(
            f"k-means found only {len(order)} distinct groups for K={k} (class features too "
            "similar): lower K or pass a category JSON file"
        )
    return CategoryMap([order[lab] for lab in raw.tolist()], [f"group{i}" for i in range(k)])


def categories_from_mapping(
    mapping: Mapping[str, Any], class_names: Sequence[str], source: str = "category map"
) -> CategoryMap:
    """Build a map from ``{class name or index string: category name}``; all classes required.
    Every error names ``source``."""
    index_of = {name: i for i, name in enumerate(class_names)}
    category_of: dict[int, str] = {}
    for key, value in mapping.items():
        key = str(key)
        if key in index_of:
            cls = index_of[key]
        elif key.isdigit() and int(key) < len(class_names):
            cls = int(key)
        else:
            raise CategoryError(
                f"{source} maps unknown class {key!r}: valid classes are "
                f"{_preview(list(class_names))} (or their indices 0..{len(class_names) - 1})"
            )
        if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
            raise CategoryError(
                f"{source} maps class {key!r} to {value!r}: category names must be non-empty "
                "strings"
            )
        if cls in category_of and category_of[cls] != str(value):
            raise CategoryError(
                f"{source} maps class {class_names[cls]!r} twice ({category_of[cls]!r} and "
                f"{str(value)!r}): keep one entry per class"
            )
        category_of[cls] = str(value)
    missing = [class_names[i] for i in range(len(class_names)) if i not in category_of]
    if missing:
        raise CategoryError(
            f"{source} leaves {len(missing)} classes unmapped ({_preview(missing)}): map every "
            "class to a category"
        )
    names: list[str] = []
    for i in range(len(class_names)):
        if category_of[i] not in names:
            names.append(category_of[i])
    try:
        return CategoryMap([names.index(category_of[i]) for i in range(len(class_names))], names)
    except CategoryError as exc:
        raise CategoryError(f"{source}: {exc}") from exc


def imagenet_categories(class_names: Sequence[str]) -> CategoryMap | None:
    """The paper's ImageNet grouping (§3.2: 58 coarse categories from WordNet) for a dataset
    whose classes are the 1000 ILSVRC-2012 WordNet ids, else None. The map is committed
    (``imagenet_categories.json``, built by scripts/imagenet_categories.py from WordNet 3.0)."""
    data = json.loads(resources.files("dmnn.data").joinpath("imagenet_categories.json")
                      .read_text(encoding="utf-8"))
    if sorted(class_names) != sorted(data["class_names"]):
        return None
    category_of = dict(zip(data["class_names"], data["class_to_category"], strict=True))
    return CategoryMap([category_of[c] for c in class_names], data["names"])


def load_category_json(path: str | os.PathLike[str], class_names: Sequence[str]) -> CategoryMap:
    """Read a user category file (flat mapping or full :meth:`CategoryMap.to_dict` form)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CategoryError(f"category file {p} does not exist: pass an existing .json file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CategoryError(
            f"category file {p} is not valid JSON ({exc.msg} at line {exc.lineno} column "
            f"{exc.colno}): fix the file"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CategoryError(f"cannot read category file {p} ({exc})") from exc
    if not isinstance(data, dict) or not data:
        raise CategoryError(
            f"category file {p} must hold a non-empty JSON object mapping class name (or index) "
            f"to category name, got {type(data).__name__}"
        )
    if "class_to_category" in data:
        try:
            return CategoryMap.from_dict(data, num_classes=len(class_names))
        except CategoryError as exc:
            raise CategoryError(f"category file {p}: {exc}") from exc
    return categories_from_mapping(data, class_names, source=f"category file {p}")


def save_category_json(cmap: CategoryMap, path: str | os.PathLike[str]) -> None:
    """Write ``cmap`` in the full form (round-trips through :func:`load_category_json`)."""
    Path(path).write_text(json.dumps(cmap.to_dict(), indent=2) + "\n", encoding="utf-8")
