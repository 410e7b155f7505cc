"""The embedded default dataset: scikit-learn's bundled 8x8 handwritten digits.

Why: it ships inside scikit-learn (no download, no --data-dir), so every command and test can run
end to end on a fresh checkout. Pixels 0..16 are rescaled to 0..255 uint8 so the digits travel
through exactly the same batching/augmentation/normalisation path as CIFAR.
"""

from __future__ import annotations

import numpy as np
import torch

from dmnn.data.arrays import ArraySplit
from dmnn.errors import DataError

DIGITS_CLASSES = [str(i) for i in range(10)]


def load_digits_splits(test_size: float = 0.2, seed: int = 0) -> tuple[ArraySplit, ArraySplit]:
    """``(train, test)``: 1x8x8 uint8 images, a deterministic stratified split (80/20, seed 0).

    Indices inside each split keep the original file order; the loaders shuffle.
    """
    if not 0.0 < test_size < 1.0:
        raise DataError(f"test_size must be in (0, 1), got {test_size}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    pixels = np.asarray(bunch.images, dtype=np.float64)  # (1797, 8, 8), values 0..16
    images = np.clip(np.rint(pixels * (255.0 / 16.0)), 0, 255).astype(np.uint8)[:, None]
    targets = np.asarray(bunch.target, dtype=np.int64)
    index = np.arange(len(targets))
    train_idx, test_idx = train_test_split(
        index, test_size=test_size, random_state=seed, stratify=targets
    )
    splits = []
    for idx in (np.sort(train_idx), np.sort(test_idx)):
        splits.append(
            ArraySplit(
                images=torch.from_numpy(np.ascontiguousarray(images[idx])),
                labels=torch.from_numpy(targets[idx]),
                class_names=list(DIGITS_CLASSES),
            )
        )
    return splits[0], splits[1]
