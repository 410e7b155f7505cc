"""Batched pad-crop-flip augmentation and normalisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dmnn.data import DataError, augment_batch, crop_flip, normalize, random_crop_flip


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _windows(x: torch.Tensor, padding: int) -> list[torch.Tensor]:
    """Every crop (and flipped crop) of one C x H x W image the augmentation may produce."""
    _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    out = []
    for top in range(2 * padding + 1):
        for left in range(2 * padding + 1):
            win = padded[:, top : top + h, left : left + w]
            out += [win, win.flip(-1)]
    return out


def test_crop_hand_checked_offsets() -> None:
    x = torch.arange(1, 10, dtype=torch.uint8).view(1, 1, 3, 3)
    # padded (p=1):      crop at top=0, left=2 (window rows 0..2, cols 2..4):
    # 0 0 0 0 0          0 0 0
    # 0 1 2 3 0          2 3 0
    # 0 4 5 6 0          5 6 0
    # 0 7 8 9 0
    # 0 0 0 0 0
    out = crop_flip(x, torch.tensor([0]), torch.tensor([2]), torch.tensor([False]), padding=1)
    expected = torch.tensor([[0, 0, 0], [2, 3, 0], [5, 6, 0]], dtype=torch.uint8)
    assert torch.equal(out[0, 0], expected)
    assert out.dtype == torch.uint8


def test_crop_matches_padded_slice_per_sample() -> None:
    x = torch.randn(3, 2, 5, 6)
    top, left = torch.tensor([0, 4, 2]), torch.tensor([3, 0, 8])
    flip = torch.tensor([False, True, False])
    out = crop_flip(x, top, left, flip, padding=4)
    padded = F.pad(x, (4, 4, 4, 4))
    for i in range(3):
        win = padded[i, :, top[i] : top[i] + 5, left[i] : left[i] + 6]
        assert torch.equal(out[i], win.flip(-1) if flip[i] else win)


def test_centre_offset_is_identity_and_flip_flips() -> None:
    x = torch.randn(2, 3, 4, 4)
    centre = torch.full((2,), 4)
    same = crop_flip(x, centre, centre, torch.tensor([False, False]), padding=4)
    assert torch.equal(same, x)
    flipped = crop_flip(x, centre, centre, torch.tensor([True, False]), padding=4)
    assert torch.equal(flipped[0], x[0].flip(-1))
    assert torch.equal(flipped[1], x[1])


def test_output_shape_and_valid_windows() -> None:
    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    out = random_crop_flip(x, _gen(0), padding=2)
    assert out.shape == x.shape and out.dtype == torch.uint8
    for i in range(6):
        assert any(torch.equal(out[i], w) for w in _windows(x[i], 2))


def test_crop_really_shifts_content() -> None:
    x = torch.randint(1, 256, (64, 1, 8, 8), dtype=torch.uint8)  # no zero pixels
    out = random_crop_flip(x, _gen(0), padding=4, flip=False)
    changed = [not torch.equal(out[i], x[i]) for i in range(64)]
    assert sum(changed) > 50  # 80 of 81 offsets move the image
    assert (out == 0).any()  # some padding came into view


def test_flip_disabled_never_flips() -> None:
    x = torch.randn(32, 1, 4, 4)
    out = random_crop_flip(x, _gen(1), padding=0, flip=False)
    assert torch.equal(out, x)
    flipped = random_crop_flip(x, _gen(1), padding=0, flip=True)
    n_flipped = sum(torch.equal(flipped[i], x[i].flip(-1)) for i in range(32))
    assert 0 < n_flipped < 32


def test_deterministic_under_same_seed() -> None:
    x = torch.randn(16, 3, 8, 8)
    a = augment_batch(x, _gen(123), copies=2)
    b = augment_batch(x, _gen(123), copies=2)
    c = augment_batch(x, _gen(124), copies=2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_copies_layout_and_independence() -> None:
    x = torch.randint(1, 256, (4, 3, 8, 8), dtype=torch.uint8)
    out = augment_batch(x, _gen(0), copies=5)
    assert out.shape == (20, 3, 8, 8)
    view = out.view(5, 4, 3, 8, 8)
    for i in range(4):  # copy k of sample i is a valid augmentation of sample i
        for k in range(5):
            assert any(torch.equal(view[k, i], w) for w in _windows(x[i], 4))
        distinct = {tuple(view[k, i].flatten().tolist()) for k in range(5)}
        assert len(distinct) > 1


def test_copies_must_be_positive() -> None:
    with pytest.raises(DataError, match="copies"):
        augment_batch(torch.zeros(1, 1, 4, 4), _gen(0), copies=0)


def test_normalize_values_and_uint8_scaling() -> None:
    x = torch.tensor([[[[0, 255]], [[51, 102]]]], dtype=torch.uint8)  # 1 x 2 x 1 x 2
    out = normalize(x, mean=(0.5, 0.2), std=(0.5, 0.1))
    expected = torch.tensor([[[[-1.0, 1.0]], [[0.0, 2.0]]]])
    assert out.dtype == torch.float32
    assert torch.allclose(out, expected, atol=1e-6)
    xf = torch.full((1, 2, 1, 1), 0.7)
    assert torch.allclose(normalize(xf, (0.5, 0.2), (0.5, 0.1)).flatten(), torch.tensor([0.4, 5.0]))


def test_normalize_channel_mismatch() -> None:
    with pytest.raises(DataError, match="3 channels"):
        normalize(torch.zeros(1, 3, 2, 2), (0.5,), (0.5,))
