"""Sub-block width rules (DMNN §3.1): N sub-blocks hold about the parameters of the original block.

* Basic block (two 3×3 convs, C_in → C → C_out): parameters 9·C·(C_in + C_out) are linear in the
  middle width C, so N sub-blocks of width C/N match eqn 1 exactly. C must divide by N.
* Bottleneck (1×1 C_in→C1, 3×3 C1→C2, 1×1 C2→C_out, C1 = C2 = C): eqn 2 with Ĉ1 = Ĉ2 = Ĉ is
  quadratic in Ĉ, so Ĉ = C/N would drop the 3×3 term to 1/N (eqn 3). We solve
  N·(C_in·Ĉ + 9·Ĉ² + Ĉ·C_out) = C_in·C + 9·C² + C·C_out for Ĉ on the first stage's repeating
  block (C_in = C_out = 4·C), round to the nearest integer, and double Ĉ per stage as the
  network doubles C (the solution is linear in C, so every stage stays matched); every block of a
  stage uses its stage's Ĉ, as ResNeXt does. For ResNet-50 this gives Ĉ = 40, 80, 160, 320 for
  N = 2 and 24, 48, 96, 192 for N = 4: the ResNeXt-50 2×40d and 4×24d group widths.
* MobileNetV2 inverted residual with expansion E: each sub-block has expansion E/N (hidden width
  E·C_in/N), so parameters and MACs split exactly. The hidden width must divide by N.
"""

from __future__ import annotations

import math

from ..checks import check_int
from ..errors import UsageError


def check_num_sub_blocks(n: int) -> None:
    check_int("num_sub_blocks", n, 1)


def even_split(width: int, n: int, what: str) -> int:
    """Width per sub-block for layers whose parameters are linear in ``width``."""
    check_num_sub_blocks(n)
    if width % n:
        raise UsageError(
            f"num_sub_blocks={n} cannot split the {width}-channel {what} evenly: "
            f"choose num_sub_blocks dividing {width}"
        )
    return width // n


def bottleneck_sub_width(
    mid: int, n: int, c_in: int | None = None, c_out: int | None = None
) -> int:
    """Ĉ with eqn 2 ≈ eqn 1 for a bottleneck of width ``mid`` (default C_in = C_out = 4·mid)."""
    check_num_sub_blocks(n)
    c_in = 4 * mid if c_in is None else c_in
    c_out = 4 * mid if c_out is None else c_out
    if n == 1:
        return mid
    original = c_in * mid + 9 * mid * mid + mid * c_out
    # 9·Ĉ² + (C_in + C_out)·Ĉ − original/N = 0
    b = c_in + c_out
    width = (-b + math.sqrt(b * b + 36 * original / n)) / 18
    sub = round(width)
    if sub < 1:
        raise UsageError(
            f"num_sub_blocks={n} is too many for a bottleneck of width {mid}: sub-blocks would "
            "have no channels; choose a smaller num_sub_blocks"
        )
    return sub


def bottleneck_params(c_in: int, mid: int, c_out: int, n: int = 1) -> int:
    """Conv parameters of eqn 1 (n = 1) or eqn 2 (n sub-blocks of width ``mid``)."""
    return n * (c_in * mid + 9 * mid * mid + mid * c_out)
