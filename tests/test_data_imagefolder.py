"""ImageFolder scanning, PIL transforms, dataset and loader."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dmnn.data import (
    DataError,
    EvalTransform,
    ImageFolderDataset,
    RandomResizedCrop,
    TrainTransform,
    load_dataset,
    scan_imagefolder,
)
from dmnn.data.imagefolder import center_crop, pil_to_tensor, resize_shorter

COLOURS = {"cat": (255, 0, 0), "dog": (0, 255, 0), "eel": (0, 0, 255)}


def make_folder(root: Path, n_train: int = 3, n_val: int = 2) -> Path:
    """Tiny ImageFolder of solid-colour PNGs (plus one .JPG and a stray text file)."""
    for split, n in (("train", n_train), ("val", n_val)):
        for name, colour in COLOURS.items():
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                size = (40 + 4 * i, 30 + 6 * i)
                Image.new("RGB", size, colour).save(d / f"img{i}.png")
            (d / "notes.txt").write_text("not an image")
    Image.new("RGB", (20, 20), COLOURS["dog"]).save(root / "train" / "dog" / "extra.JPG")
    return root


def test_scan_sorted_classes_and_samples(tmp_path: Path) -> None:
    index = scan_imagefolder(make_folder(tmp_path / "d"))
    assert index.classes == ["cat", "dog", "eel"]
    assert len(index.train) == 10 and len(index.val) == 6
    assert [lab for _, lab in index.train].count(1) == 4  # dog + extra.JPG
    assert all(p.lower().endswith((".png", ".jpg")) for p, _ in index.train)
    assert sorted({lab for _, lab in index.val}) == [0, 1, 2]


def test_missing_root_and_splits(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist.*--data-dir"):
        scan_imagefolder(tmp_path / "nope")
    (tmp_path / "d" / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match=r"has no val/ folder"):
        scan_imagefolder(tmp_path / "d")
    (tmp_path / "e" / "val").mkdir(parents=True)
    with pytest.raises(DataError, match=r"has no train/ folder"):
        scan_imagefolder(tmp_path / "e")


def test_no_class_folders(tmp_path: Path) -> None:
    (tmp_path / "d" / "train").mkdir(parents=True)
    (tmp_path / "d" / "val").mkdir()
    with pytest.raises(DataError, match=r"train holds no class folders"):
        scan_imagefolder(tmp_path / "d")


def test_class_sets_differ(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d")
    (root / "val" / "eel").rename(root / "val" / "emu")
    with pytest.raises(DataError, match=r"only in train: \['eel'\], only in val: \['emu'\]"):
        scan_imagefolder(root)


def test_empty_class(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d")
    for f in (root / "val" / "dog").glob("*.png"):
        f.unlink()
    with pytest.raises(DataError, match=r"val/dog holds no images"):
        scan_imagefolder(root)


def test_unreadable_image(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d")
    bad = root / "train" / "cat" / "img0.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    index = scan_imagefolder(root)
    ds = ImageFolderDataset(index.train, EvalTransform(16))
    with pytest.raises(DataError, match=r"cannot read image .*img0\.png"):
        ds[0]


def test_resize_shorter_and_center_crop_hand_checked() -> None:
    img = Image.new("L", (40, 20))
    img.putdata([x for _ in range(20) for x in range(40)])  # pixel value = column index
    small = resize_shorter(img, 10)
    assert small.size == (20, 10)
    wide = Image.new("L", (8, 4))
    wide.putdata([x for _ in range(4) for x in range(8)])
    crop = center_crop(wide, 4)
    assert np.asarray(crop)[0, :4].tolist() == [2, 3, 4, 5]  # left offset (8 - 4) / 2 = 2


def test_eval_transform_shape_and_values() -> None:
    img = Image.new("RGB", (50, 30), (255, 0, 0))
    out = EvalTransform(16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(img)
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    assert torch.allclose(out[0], torch.ones(16, 16)) and torch.allclose(
        out[1], -torch.ones(16, 16)
    )
    assert EvalTransform(224).resize == 256


def test_random_resized_crop_params_in_range() -> None:
    rrc = RandomResizedCrop(8)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, h, w = rrc.get_params(100, 80, g)
        assert top >= 0 and top + h <= 80 and left >= 0 and left + w <= 100
        assert 0.08 * 8000 * 0.9 <= h * w <= 8000
        assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05
    a = [rrc.get_params(100, 80, torch.Generator().manual_seed(5)) for _ in range(2)]
    assert a[0] == a[1]


def test_random_resized_crop_fallback_centre() -> None:
    rrc = RandomResizedCrop(8, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    top, left, h, w = rrc.get_params(100, 10, torch.Generator().manual_seed(0))
    assert (h, w) == (10, 10) and top == 0 and left == 45  # centre square
    assert math.isclose(w / h, 1.0)


def test_train_transform_shape_flip_and_determinism() -> None:
    img = Image.new("RGB", (32, 32))
    img.putdata([(x * 8, 0, 0) for _ in range(32) for x in range(32)])  # red ramp left -> right
    tf = TrainTransform(16, mean=(0, 0, 0), std=(1, 1, 1), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    outs = [tf(img, torch.Generator().manual_seed(s)) for s in range(16)]
    assert all(o.shape == (3, 16, 16) for o in outs)
    increasing = [bool(o[0, 0, -1] > o[0, 0, 0]) for o in outs]
    assert any(increasing) and not all(increasing)  # some flipped, some not
    again = tf(img, torch.Generator().manual_seed(3))
    assert torch.equal(again, outs[3])
    assert torch.allclose(pil_to_tensor(img)[0, 0, 1], torch.tensor(8 / 255))


def test_dataset_seeded_keys_and_copies(tmp_path: Path) -> None:
    index = scan_imagefolder(make_folder(tmp_path / "d"))
    ds = ImageFolderDataset(index.train, TrainTransform(12), copies=3)
    x, label = ds[(4, 99)]
    assert x.shape == (3, 3, 12, 12) and label == index.train[4][1]
    assert torch.equal(x, ds[(4, 99)][0])


def test_load_dataset_imagefolder(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d")
    bundle = load_dataset("imagefolder", root, batch_size=4, image_size=16, drop_last=False)
    assert bundle.num_classes == 3 and bundle.in_chans == 3 and bundle.input_size == 16
    assert bundle.class_names == ["cat", "dog", "eel"]
    assert bundle.category_map.num_categories == 2  # round(sqrt(3))
    batches = list(bundle.train)
    assert len(batches) == len(bundle.train) == 3
    assert sum(len(b.labels) for b in batches) == 10
    x, y, c = batches[0]
    assert x.shape[1:] == (3, 16, 16)
    assert torch.equal(c, bundle.category_map(y))
    val = list(bundle.test)
    # Solid colours: the eval transform gives the normalised class colour everywhere.
    red = (1.0 - 0.485) / 0.229
    for b in val:
        for img, lab in zip(b.images, b.labels, strict=True):
            if lab == 0:
                assert torch.allclose(img[0], torch.full((16, 16), red), atol=1e-4)


def test_imagefolder_loader_reproducible_and_worker_independent(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d")
    kw = {"batch_size": 3, "image_size": 8, "seed": 7, "categories": 3}
    a = load_dataset("imagefolder", root, **kw)
    b = load_dataset("imagefolder", root, num_workers=2, **kw)
    first_a, first_b = next(iter(a.train)), next(iter(b.train))
    assert torch.equal(first_a.labels, first_b.labels)
    assert torch.equal(first_a.images, first_b.images)
    second_a = next(iter(a.train))  # epoch 1: new order/augmentation
    assert not torch.equal(second_a.images, first_a.images)


def test_imagefolder_copies(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "d")
    bundle = load_dataset("imagefolder", root, batch_size=2, image_size=8, copies=2)
    x, y, c = next(iter(bundle.train))
    assert x.shape == (4, 3, 8, 8)
    assert torch.equal(y[:2], y[2:]) and torch.equal(c[:2], c[2:])
