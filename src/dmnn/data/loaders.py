"""Batch loaders with one interface for in-memory and on-disk datasets.

Why: the training loop only sees "an iterable of ``Batch(images, labels, categories)`` with a
``len()``", whatever the dataset. In-memory data (digits, CIFAR) is batched by indexing one uint8
tensor and augmented with whole-batch tensor ops (far faster than a per-sample DataLoader);
ImageFolder data goes through a torch ``DataLoader`` with workers.

Reproducibility: epoch ``e`` of a loader built with ``seed`` draws its order and augmentation
from a generator seeded by ``(seed, e)``; iterating advances the epoch, and ``set_epoch`` jumps to
one (e.g. when resuming), so a resumed run sees the same batches as an uninterrupted one.

Data parallelism: ``shard(rank, world, pad)`` makes a loader read only its rank's rows of every
epoch (:func:`dmnn.distributed.shard_order`); the permutation is drawn before sharding, so it is
the same on every rank, and a world of 1 is the single-process order.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from dmnn.data.arrays import ArraySplit
from dmnn.data.augment import augment_batch, normalize
from dmnn.data.categories import CategoryMap
from dmnn.data.imagefolder import ImageFolderDataset
from dmnn.distributed.shards import shard_order
from dmnn.errors import DataError, UsageError


class Batch(NamedTuple):
    """One batch: normalised float images, int64 class labels, int64 category labels."""

    images: torch.Tensor
    labels: torch.Tensor
    categories: torch.Tensor


class BatchLoader(Protocol):
    """What the training loop relies on; both loaders below satisfy it."""

    batch_size: int
    sharding: tuple[int, int]  # (rank, world size): (0, 1) reads every row

    def __iter__(self) -> Iterator[Batch]: ...

    def __len__(self) -> int: ...

    def set_epoch(self, epoch: int) -> None: ...

    def plain_subset(self, n: int, batch_size: int, seed: int = 0) -> BatchLoader: ...

    def shard(self, rank: int, world: int, pad: bool) -> BatchLoader: ...

    @property
    def num_samples(self) -> int: ...


@dataclass(frozen=True)
class AugmentConfig:
    """Batched pad-crop-flip settings (see :func:`dmnn.data.augment.augment_batch`)."""

    padding: int = 4
    flip: bool = True


def epoch_seed(seed: int, epoch: int) -> int:
    """Well-mixed 63-bit seed for ``(seed, epoch)`` (nearby seeds give unrelated streams)."""
    mask = (1 << 64) - 1
    state = np.random.SeedSequence([seed & mask, epoch & mask]).generate_state(1, np.uint64)
    return int(state[0]) & ((1 << 63) - 1)


def subset_indices(num_samples: int, n: int, seed: int) -> torch.Tensor:
    """A seeded random ``n`` of ``num_samples`` indices, in ascending order."""
    g = torch.Generator().manual_seed(epoch_seed(seed, 1 << 40))  # not any epoch's stream
    return torch.randperm(num_samples, generator=g)[: max(1, n)].sort().values


def shard_rows(n: int, rank: int, world: int, pad: bool) -> int:
    """How many of ``n`` rows rank ``rank`` of ``world`` reads (see ``shard_order``)."""
    return -(-n // world) if pad else len(range(rank, n, world))


def _check_shard(rank: int, world: int) -> None:
    if not 0 <= rank < world:
        raise DataError(f"rank {rank} is not in a world of {world} processes")


def _check_sizes(batch_size: int, copies: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch size must be a positive integer, got {batch_size!r}")
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise DataError(f"copies must be a positive integer, got {copies!r}")


class TensorBatchLoader:
    """Batches of an in-memory :class:`ArraySplit`, augmented and normalised as tensor ops.

    Yields ``Batch(images, labels, categories)``: images float32 ``(copies*B, C, H, W)``
    normalised with ``mean``/``std``; with ``copies > 1`` they are copy-major (``[k*B + i]`` is
    copy ``k`` of sample ``i``) and labels/categories are repeated to match. ``drop_last=False``
    visits every sample exactly once per epoch.
    """

    def __init__(
        self,
        split: ArraySplit,
        categories: torch.Tensor,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        batch_size: int,
        shuffle: bool,
        drop_last: bool = False,
        augment: AugmentConfig | None = None,
        copies: int = 1,
        seed: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        _check_sizes(batch_size, copies)
        if categories.shape != split.labels.shape:
            raise DataError("need exactly one category label per sample")
        if drop_last and len(split) < batch_size:
            raise DataError(
                f"the split has {len(split)} samples, fewer than one batch of {batch_size} with "
                "drop_last: lower the batch size"
            )
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.categories = categories.to(torch.int64).to(self.device)
        self.mean, self.std = tuple(mean), tuple(std)
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.augment, self.copies, self.seed = augment, copies, seed
        self.epoch = 0
        self.sharding, self.pad = (0, 1), False

    @property
    def num_samples(self) -> int:
        return int(self.labels.shape[0])

    def __len__(self) -> int:
        n, b = shard_rows(self.num_samples, *self.sharding, self.pad), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def shard(self, rank: int, world: int, pad: bool) -> TensorBatchLoader:
        """Read rank ``rank``'s rows of every epoch (in place; returns self)."""
        _check_shard(rank, world)
        self.sharding, self.pad = (rank, world), pad
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def plain_subset(self, n: int, batch_size: int, seed: int = 0) -> TensorBatchLoader:
        """Up to ``n`` of these samples, unaugmented, unshuffled, one copy, every sample kept."""
        _check_sizes(batch_size, 1)
        idx = subset_indices(self.num_samples, n, seed).to(self.device)
        sub = copy.copy(self)
        sub.images, sub.labels, sub.categories = (
            self.images[idx], self.labels[idx], self.categories[idx])
        sub.batch_size, sub.shuffle, sub.drop_last = batch_size, False, False
        sub.augment, sub.copies, sub.epoch = None, 1, 0
        sub.sharding, sub.pad = (0, 1), False
        return sub

    def __iter__(self) -> Iterator[Batch]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self._iterate(epoch)

    def _iterate(self, epoch: int) -> Iterator[Batch]:
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        n = self.num_samples
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        rank, world = self.sharding
        order = shard_order(order, rank, world, self.pad).to(self.device)  # one copy an epoch
        aug = g  # one process on the CPU: the stream of every earlier release
        if rank or self.device.type != "cpu":  # other ranks' crops differ; drawn on the device
            aug = torch.Generator(device=self.device)
            aug.manual_seed(epoch_seed(epoch_seed(self.seed, epoch), rank))
        n = order.numel()
        stop = n - n % self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            idx = order[start : start + self.batch_size]
            x, y, c = self.images[idx], self.labels[idx], self.categories[idx]
            if self.augment is not None:
                x = augment_batch(x, aug, self.copies, self.augment.padding, self.augment.flip)
            elif self.copies > 1:
                x = x.repeat(self.copies, 1, 1, 1)
            if self.copies > 1:
                y, c = y.repeat(self.copies), c.repeat(self.copies)
            yield Batch(normalize(x, self.mean, self.std), y, c)


class SeededSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, per-sample seed)``: the order and every augmentation fixed by the epoch."""

    def __init__(self, num_samples: int, shuffle: bool, seed: int = 0) -> None:
        self.num_samples, self.shuffle, self.seed = num_samples, shuffle, seed
        self.epoch = 0
        self.sharding, self.pad = (0, 1), False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return shard_rows(self.num_samples, *self.sharding, self.pad)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        n = self.num_samples
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        seeds = torch.randint(0, 1 << 62, (n,), generator=g)
        rank, world = self.sharding
        picked = shard_order(torch.arange(n), rank, world, self.pad)
        return iter(zip(order[picked].tolist(), seeds[picked].tolist(), strict=True))


@dataclass(frozen=True)
class Unreadable:
    """A sample whose file could not be read, as a worker hands it back: a DataLoader worker
    re-raises an exception as text, so the error travels as this record instead and the main
    process raises it as the :class:`DataError` it was."""

    message: str


class _Reporting(Dataset):
    """The dataset, with a :class:`DataError` returned as :class:`Unreadable` (picklable)."""

    def __init__(self, dataset: ImageFolderDataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        try:
            return self.dataset[key]
        except DataError as err:
            return Unreadable(str(err))


def _collate(items: list) -> object:
    """``default_collate``, or the first :class:`Unreadable` of the batch."""
    bad = next((item for item in items if isinstance(item, Unreadable)), None)
    return bad if bad is not None else default_collate(items)


class TorchBatchLoader:
    """Batches of an on-disk :class:`ImageFolderDataset` through a worker ``DataLoader``.

    Same ``Batch`` output and copy-major ``copies`` layout as :class:`TensorBatchLoader`; images
    stay on the CPU (move them in the training step; ``pin_memory`` speeds that up).
    """

    def __init__(
        self,
        dataset: ImageFolderDataset,
        category_map: CategoryMap,
        *,
        batch_size: int,
        shuffle: bool,
        drop_last: bool = False,
        seed: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        _check_sizes(batch_size, dataset.copies)
        if num_workers < 0:
            raise DataError(f"num_workers must be >= 0, got {num_workers}")
        if drop_last and len(dataset) < batch_size:
            raise DataError(
                f"the split has {len(dataset)} samples, fewer than one batch of {batch_size} "
                "with drop_last: lower the batch size"
            )
        self.batch_size, self.copies = batch_size, dataset.copies
        self.sampler = SeededSampler(len(dataset), shuffle, seed)
        self.dataset = dataset
        self.loader = DataLoader(
            _Reporting(dataset),
            batch_size=batch_size,
            collate_fn=_collate,
            sampler=self.sampler,
            num_workers=num_workers,
            drop_last=drop_last,
            pin_memory=pin_memory,
            persistent_workers=num_workers > 0,
        )
        self.table = category_map.table()
        self.category_map, self.seed = category_map, seed
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.epoch = 0

    def plain_subset(
        self, n: int, batch_size: int, seed: int = 0, transform=None
    ) -> TorchBatchLoader:
        """Up to ``n`` of these samples through ``transform`` (the eval transform: no
        augmentation), unshuffled, one copy, every sample kept. The transform is required: this
        loader's own may augment, which would bias whatever is measured on the subset."""
        if transform is None:
            raise UsageError("plain_subset of an image-folder loader needs the eval transform "
                             "(DataBundle.plain_train_subset passes the test split's)")
        dataset = self.dataset
        idx = subset_indices(len(dataset), n, seed).tolist()
        samples = [dataset.samples[i] for i in idx]
        return TorchBatchLoader(
            ImageFolderDataset(samples, transform), self.category_map,
            batch_size=batch_size, shuffle=False, seed=self.seed,
            num_workers=self.num_workers, pin_memory=self.pin_memory,
        )

    @property
    def num_samples(self) -> int:
        return self.sampler.num_samples

    @property
    def sharding(self) -> tuple[int, int]:
        return self.sampler.sharding

    def shard(self, rank: int, world: int, pad: bool) -> TorchBatchLoader:
        """Read rank ``rank``'s rows of every epoch (in place; returns self)."""
        _check_shard(rank, world)
        self.sampler.sharding, self.sampler.pad = (rank, world), pad
        return self

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[Batch]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        self.sampler.set_epoch(epoch)
        return self._iterate()

    def _iterate(self) -> Iterator[Batch]:
        for batch in self.loader:
            if isinstance(batch, Unreadable):
                raise DataError(batch.message)
            x, y = batch
            if self.copies > 1:  # (B, copies, C, H, W) -> copy-major (copies*B, C, H, W)
                x = x.transpose(0, 1).reshape(-1, *x.shape[2:])
                y = y.repeat(self.copies)
            yield Batch(x, y, self.table[y])
