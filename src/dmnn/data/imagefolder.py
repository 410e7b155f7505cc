"""ImageFolder-style datasets (``root/train/<class>/*.jpg``, ``root/val/<class>/...``) on PIL.

Why: ImageNet-scale data cannot live in memory, so images are decoded per sample in DataLoader
workers. torchvision is not a dependency, so the ImageNet transforms (random-resized-crop + flip
for training, resize + center-crop for evaluation) are implemented here on PIL and torch.
Randomness comes from a per-sample seed handed in by the sampler, so augmentation is reproducible
whatever the number of workers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from dmnn.data.augment import normalize
from dmnn.errors import CategoryError, DataError

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLITS = ("train", "val")
_LAYOUT = "root/train/<class>/*.jpg and root/val/<class>/*.jpg"

Sample = tuple[str, int]


# --------------------------------------------------------------------------------- scanning


@dataclass
class ImageFolderIndex:
    """Sorted class names and ``(path, label)`` samples of the train and val splits."""

    root: Path
    classes: list[str]
    train: list[Sample]
    val: list[Sample]


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(class_dir: Path) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS):
                found.append(os.path.join(dirpath, name))
    return found


def scan_imagefolder(root: str | os.PathLike[str]) -> ImageFolderIndex:
    """Index ``root``; layout problems (missing split, no/empty/mismatched classes) -> DataError."""
    root_path = Path(root).expanduser()
    if not root_path.exists():
        raise DataError(
            f"data directory {root_path} does not exist: pass --data-dir pointing at the folder "
            f"holding {_LAYOUT}; nothing is downloaded"
        )
    if not root_path.is_dir():
        raise DataError(f"{root_path} is not a directory: ImageFolder data needs {_LAYOUT}")
    per_split: dict[str, list[str]] = {}
    for split in SPLITS:
        split_dir = root_path / split
        if not split_dir.is_dir():
            raise DataError(f"{root_path} has no {split}/ folder: ImageFolder data needs {_LAYOUT}")
        classes = _class_dirs(split_dir)
        if not classes:
            raise DataError(
                f"{split_dir} holds no class folders: put each class's images in "
                f"{split_dir}/<class name>/"
            )
        per_split[split] = classes
    if per_split["train"] != per_split["val"]:
        only_train = sorted(set(per_split["train"]) - set(per_split["val"]))
        only_val = sorted(set(per_split["val"]) - set(per_split["train"]))
        raise DataError(
            f"train/ and val/ of {root_path} have different class folders (only in train: "
            f"{only_train[:5]}, only in val: {only_val[:5]}): both splits need the same classes"
        )
    classes = per_split["train"]
    if len(classes) < 2:
        raise DataError(
            f"{root_path} has {len(classes)} class folder ({classes[0]!r}): a classifier needs at "
            "least 2 classes (one class folder per class under train/ and val/)"
        )
    samples: dict[str, list[Sample]] = {}
    for split in SPLITS:
        samples[split] = []
        for label, name in enumerate(classes):
            files = _images_in(root_path / split / name)
            if not files:
                raise DataError(
                    f"class folder {root_path / split / name} holds no images "
                    f"({', '.join(IMG_EXTENSIONS)}): add images or remove the folder"
                )
            samples[split].extend((f, label) for f in files)
    return ImageFolderIndex(root_path, classes, samples["train"], samples["val"])


def load_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Decode an image file as RGB; unreadable/corrupt files -> DataError naming the file."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"cannot read image {path} ({type(exc).__name__}: {exc}): remove or replace the file"
        ) from exc


# ------------------------------------------------------------------------------- transforms


def _uniform(lo: float, hi: float, g: torch.Generator | None) -> float:
    return float(torch.empty(1).uniform_(lo, hi, generator=g).item())


def _randint(lo: int, hi_inclusive: int, g: torch.Generator | None) -> int:
    return int(torch.randint(lo, hi_inclusive + 1, (1,), generator=g).item())


class RandomResizedCrop:
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio``, resize to size.

    Same sampling as torchvision's ``RandomResizedCrop`` (10 attempts, then a center crop with
    the aspect ratio clamped to ``ratio``).
    """

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ) -> None:
        if size < 1 or not 0 < scale[0] <= scale[1] or not 0 < ratio[0] <= ratio[1]:
            raise DataError(f"bad RandomResizedCrop size={size} scale={scale} ratio={ratio}")
        self.size, self.scale, self.ratio = int(size), scale, ratio

    def get_params(
        self, width: int, height: int, generator: torch.Generator | None = None
    ) -> tuple[int, int, int, int]:
        """``(top, left, crop_height, crop_width)`` of the crop box."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * _uniform(self.scale[0], self.scale[1], generator)
            aspect = math.exp(_uniform(log_ratio[0], log_ratio[1], generator))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return _randint(0, height - h, generator), _randint(0, width - w, generator), h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, img: Image.Image, generator: torch.Generator | None = None) -> Image.Image:
        top, left, h, w = self.get_params(img.width, img.height, generator)
        box = (left, top, left + w, top + h)
        return img.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box)


def resize_shorter(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size``, keeping the aspect ratio."""
    w, h = img.size
    if w <= h:
        new_w, new_h = size, max(1, int(size * h / w))
    else:
        new_w, new_h = max(1, int(size * w / h)), size
    if (new_w, new_h) == (w, h):
        return img
    return img.resize((new_w, new_h), Image.Resampling.BILINEAR)


def center_crop(img: Image.Image, size: int) -> Image.Image:
    """Central ``size x size`` window (the image must be at least that large)."""
    w, h = img.size
    if w < size or h < size:
        raise DataError(f"cannot center-crop {size}x{size} from a {w}x{h} image: resize first")
    top, left = int(round((h - size) / 2)), int(round((w - size) / 2))
    return img.crop((left, top, left + size, top + size))


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float32 C x H x W in [0, 1]."""
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).to(torch.float32).div_(255.0)


Transform = Callable[[Image.Image, torch.Generator | None], torch.Tensor]


class TrainTransform:
    """ImageNet training transform: random-resized-crop to ``size``, random flip, normalize."""

    def __init__(
        self,
        size: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip: bool = True,
    ) -> None:
        self.crop = RandomResizedCrop(size, scale, ratio)
        self.mean, self.std, self.flip = tuple(mean), tuple(std), flip

    def __call__(self, img: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        img = self.crop(img, generator)
        if self.flip and _uniform(0.0, 1.0, generator) < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return normalize(pil_to_tensor(img), self.mean, self.std)


SMALL_IMAGE = 64
"""Up to this side, ImageFolder images are treated like CIFAR's: fit to the size, then the
pad-and-crop augmentation (RandomResizedCrop's 8 % crops would leave a 32 px image a blur)."""


class SmallTrainTransform:
    """CIFAR-style training transform for small images: shorter side to ``size``, centre crop,
    zero-pad by ``size // 8``, random ``size`` crop, random flip, normalize."""

    def __init__(self, size: int, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, flip: bool = True) -> None:
        self.size, self.pad = int(size), max(1, int(size) // 8)
        self.mean, self.std, self.flip = tuple(mean), tuple(std), flip

    def __call__(self, img: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        x = pil_to_tensor(center_crop(resize_shorter(img, self.size), self.size))
        x = torch.nn.functional.pad(x, (self.pad,) * 4)
        top, left = _randint(0, 2 * self.pad, generator), _randint(0, 2 * self.pad, generator)
        x = x[:, top:top + self.size, left:left + self.size]
        if self.flip and _uniform(0.0, 1.0, generator) < 0.5:
            x = x.flip(-1)
        return normalize(x, self.mean, self.std)


def train_transform(size: int, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD) -> Callable:
    """The training transform for images of side ``size`` (small: CIFAR-style)."""
    if size <= SMALL_IMAGE:
        return SmallTrainTransform(size, mean, std)
    return TrainTransform(size, mean, std)


class EvalTransform:
    """ImageNet evaluation transform: shorter side to ``size*256/224``, center crop, normalize."""

    def __init__(
        self,
        size: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.size = int(size)
        # small images are fitted as they are (CIFAR's test images), large ones with a margin
        self.resize = self.size if self.size <= SMALL_IMAGE else int(size * 256 / 224)
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, img: Image.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        img = center_crop(resize_shorter(img, self.resize), self.size)
        return normalize(pil_to_tensor(img), self.mean, self.std)


# ---------------------------------------------------------------------------------- dataset


class ImageFolderDataset(Dataset):
    """``(image tensor, label)`` per sample; keys are an index or ``(index, seed)``.

    With an ``(index, seed)`` key (as :class:`SeededSampler` yields) the transform draws from a
    generator seeded with ``seed``, making augmentation independent of worker scheduling. With
    ``copies > 1`` the image is ``copies x C x H x W``: independent augmentations of one file.
    """

    def __init__(self, samples: Sequence[Sample], transform: Transform, copies: int = 1) -> None:
        if copies < 1:
            raise DataError(f"copies must be >= 1, got {copies}")
        self.samples = list(samples)
        self.transform = transform
        self.copies = copies

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        if isinstance(key, tuple):
            index, seed = key
            generator: torch.Generator | None = torch.Generator().manual_seed(int(seed))
        else:
            index, generator = key, None
        path, label = self.samples[index]
        img = load_rgb(path)
        if self.copies == 1:
            return self.transform(img, generator), label
        return torch.stack([self.transform(img, generator) for _ in range(self.copies)]), label


def imagefolder_class_features(
    samples: Sequence[Sample], num_classes: int, per_class: int = 8, size: int = 32
) -> np.ndarray:
    """Mean ``size x size`` thumbnail of the first ``per_class`` images of each class, flattened.

    Why: k-means categories need one vector per class without decoding the whole dataset.
    """
    sums = np.zeros((num_classes, 3 * size * size), dtype=np.float64)
    counts = np.zeros(num_classes, dtype=np.int64)
    for path, label in samples:
        if counts[label] >= per_class:
            continue
        thumb = center_crop(resize_shorter(load_rgb(path), size), size)
        sums[label] += pil_to_tensor(thumb).numpy().reshape(-1)
        counts[label] += 1
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0).tolist()
        raise CategoryError(
            f"classes {missing[:8]} have no training images: cannot build categories")
    return sums / counts[:, None]
