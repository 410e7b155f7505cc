"""Data layer: CIFAR-10/100, ImageFolder and the embedded digits set, never downloaded.

The training engine calls :func:`load_dataset` and iterates ``bundle.train`` / ``bundle.test``,
which yield ``Batch(images, labels, categories)`` for every dataset.
"""

from dmnn.data.arrays import ArraySplit
from dmnn.data.augment import augment_batch, crop_flip, normalize, random_crop_flip, to_float
from dmnn.data.categories import (
    CIFAR10_CLASSES,
    CIFAR10_GROUPS,
    CategoryMap,
    categories_from_mapping,
    cifar10_default_categories,
    class_mean_features,
    coarse_label_categories,
    kmeans_categories,
    load_category_json,
    save_category_json,
)
from dmnn.data.cifar import RestrictedUnpickler, load_cifar, load_cifar10, load_cifar100
from dmnn.data.datasets import (
    DATASETS,
    DataBundle,
    DatasetSpec,
    load_dataset,
    resolve_categories,
)
from dmnn.data.digits import load_digits_splits
from dmnn.data.imagefolder import (
    EvalTransform,
    ImageFolderDataset,
    RandomResizedCrop,
    TrainTransform,
    scan_imagefolder,
)
from dmnn.data.loaders import (
    AugmentConfig,
    Batch,
    BatchLoader,
    SeededSampler,
    TensorBatchLoader,
    TorchBatchLoader,
)
from dmnn.errors import DataError

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_GROUPS",
    "DATASETS",
    "ArraySplit",
    "AugmentConfig",
    "Batch",
    "BatchLoader",
    "CategoryMap",
    "DataBundle",
    "DataError",
    "DatasetSpec",
    "EvalTransform",
    "ImageFolderDataset",
    "RandomResizedCrop",
    "RestrictedUnpickler",
    "SeededSampler",
    "TensorBatchLoader",
    "TorchBatchLoader",
    "TrainTransform",
    "augment_batch",
    "categories_from_mapping",
    "cifar10_default_categories",
    "class_mean_features",
    "coarse_label_categories",
    "crop_flip",
    "kmeans_categories",
    "load_category_json",
    "load_cifar",
    "load_cifar10",
    "load_cifar100",
    "load_dataset",
    "load_digits_splits",
    "normalize",
    "random_crop_flip",
    "resolve_categories",
    "save_category_json",
    "scan_imagefolder",
    "to_float",
]
