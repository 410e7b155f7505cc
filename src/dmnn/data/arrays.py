"""In-memory image splits shared by the CIFAR and digits loaders.

Why: small datasets live entirely in memory as one uint8 tensor, so batching, augmentation and
normalisation can run as whole-batch tensor ops instead of per-sample Python code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dmnn.errors import DataError


@dataclass
class ArraySplit:
    """One split (train or test) of an in-memory image dataset.

    ``images`` is uint8 ``N x C x H x W`` (raw 0..255 pixels, not normalised); ``labels`` int64
    ``N``. ``coarse_labels``/``coarse_names`` are set only when the dataset ships a coarse
    labelling (CIFAR-100's 20 superclasses).
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    coarse_labels: torch.Tensor | None = None
    coarse_names: list[str] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"images must be a uint8 N x C x H x W tensor, got {self.images.dtype} with shape "
                f"{tuple(self.images.shape)}: convert pixels to 0..255 uint8 first"
            )
        n = self.images.shape[0]
        _check_labels(self.labels, n, len(self.class_names), "labels")
        if (self.coarse_labels is None) != (self.coarse_names is None):
            raise DataError("coarse_labels and coarse_names must be given together or not at all")
        if self.coarse_labels is not None and self.coarse_names is not None:
            _check_labels(self.coarse_labels, n, len(self.coarse_names), "coarse labels")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_chans(self) -> int:
        return int(self.images.shape[1])

    @property
    def input_size(self) -> int:
        return int(self.images.shape[2])

    def select(self, index: torch.Tensor) -> ArraySplit:
        """The samples at ``index`` (a 1-D long tensor), keeping names and coarse labels."""
        return ArraySplit(
            images=self.images[index],
            labels=self.labels[index],
            class_names=list(self.class_names),
            coarse_labels=None if self.coarse_labels is None else self.coarse_labels[index],
            coarse_names=None if self.coarse_names is None else list(self.coarse_names),
        )


def _check_labels(labels: torch.Tensor, n: int, num_classes: int, what: str) -> None:
    if labels.dtype != torch.int64 or labels.dim() != 1 or labels.shape[0] != n:
        raise DataError(
            f"{what} must be an int64 tensor of length {n} (one per image), got {labels.dtype} "
            f"with shape {tuple(labels.shape)}"
        )
    if num_classes < 1:
        raise DataError(f"{what} need at least one class name, got none")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DataError(
            f"{what} range {int(labels.min())}..{int(labels.max())} is outside 0..{num_classes - 1}"
            f" ({num_classes} class names): the labels and the class-name list disagree"
        )
