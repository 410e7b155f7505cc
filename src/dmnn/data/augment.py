"""CIFAR-style augmentation as batched tensor ops, plus normalisation.

Why: per-sample PIL transforms dominate the step time of small CNNs; on an in-memory uint8 batch
the standard "zero-pad 4, random crop, random horizontal flip" is a single gather. Every random
draw comes from an explicit ``torch.Generator`` so a run is reproducible from its seed.

Apply augmentation to raw pixels (uint8 or [0, 1] floats) *before* :func:`normalize`: the padding
is then black, as with torchvision's ``RandomCrop(padding=4)`` on PIL images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from dmnn.errors import DataError


def crop_flip(
    x: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    flip: torch.Tensor,
    padding: int,
) -> torch.Tensor:
    """Deterministic core: zero-pad by ``padding``, crop ``H x W`` at per-sample offsets, flip.

    ``top``/``left`` (long, shape ``B``) index into the padded image, in ``0..2*padding``;
    ``top == left == padding`` with no flip returns ``x`` unchanged. ``flip`` (bool, ``B``) mirrors
    the cropped window left-right.
    """
    if x.dim() != 4:
        raise DataError(f"augmentation expects a B x C x H x W batch, got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    p = int(padding)
    if p < 0:
        raise DataError(f"padding must be >= 0, got {padding}")
    padded = F.pad(x, (p, p, p, p)) if p else x
    wp = w + 2 * p
    dev = x.device
    rows = top.to(dev).view(b, 1) + torch.arange(h, device=dev).view(1, h)  # (B, H)
    cols = left.to(dev).view(b, 1) + torch.arange(w, device=dev).view(1, w)  # (B, W)
    cols = torch.where(flip.to(dev).view(b, 1), cols.flip(1), cols)
    flat = (rows.view(b, h, 1) * wp + cols.view(b, 1, w)).view(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, -1).gather(2, flat).view(b, c, h, w)


def random_crop_flip(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    padding: int = 4,
    flip: bool = True,
) -> torch.Tensor:
    """Pad-and-random-crop plus random horizontal flip, independently for every sample."""
    b = x.shape[0]
    gdev = generator.device if generator is not None else torch.device("cpu")
    top = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=gdev)
    left = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=gdev)
    if flip:
        flips = torch.rand(b, generator=generator, device=gdev) < 0.5
    else:
        flips = torch.zeros(b, dtype=torch.bool, device=gdev)
    return crop_flip(x, top, left, flips, padding)


def augment_batch(
    x: torch.Tensor,
    generator: torch.Generator | None = None,
    copies: int = 1,
    padding: int = 4,
    flip: bool = True,
) -> torch.Tensor:
    """``copies`` independently augmented copies of each sample of ``x`` (B x C x H x W).

    Returns shape ``(copies * B, C, H, W)`` in copy-major order: ``out[k * B + i]`` is copy ``k``
    of sample ``i``, so ``out.view(copies, B, C, H, W)[k]`` is the k-th augmented batch and the
    matching labels are ``labels.repeat(copies)``. With ``copies=1`` the shape is unchanged.
    """
    if copies < 1:
        raise DataError(f"copies must be >= 1, got {copies}")
    if copies > 1:
        x = x.repeat(copies, 1, 1, 1)
    return random_crop_flip(x, generator, padding=padding, flip=flip)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1]; float input is returned as float32 unchanged."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    return x.to(torch.float32)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel on a B x C x H x W (or C x H x W) batch.

    uint8 input is first scaled to [0, 1], so ``mean``/``std`` are always in [0, 1] units.
    """
    c = x.shape[-3] if x.dim() >= 3 else -1
    if len(mean) != c or len(std) != c:
        raise DataError(
            f"normalize got {len(mean)} means and {len(std)} stds for {c} channels: "
            "give one value per channel"
        )
    if any(s <= 0 for s in std):
        raise DataError(f"std values must be > 0, got {list(std)}")
    xf = to_float(x)
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(c, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(c, 1, 1)
    return (xf - m) / s
