"""The pyramid layout: which view of the face each branch sees, and whether it is valid.

``multiples`` lists one entry per branch, as in the official code:

- ``[1]``: a single branch on the full-size image (the plain single-scale network);
- ``[1, m1, ..., mk, 1]``: the first 1 is the low-resolution view (the STN output average-pooled
  by the largest multiple), each ``m`` is that view upscaled x``m`` by super resolution, and the
  last 1 is the full-size image. ``[1, 2, 1]`` is the paper; ``[1, 2, 4, 1]`` its deeper variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from psr.models.sr import SR_SCALES
from psr.models.vgg import VGG_NUM_POOLS

MIN_BRANCH_SIZE = 2**VGG_NUM_POOLS


@dataclass(frozen=True)
class Branch:
    """One pyramid branch: its input ``kind``, SR ``scale`` (1 if none) and input side in px."""

    kind: Literal["low", "sr", "full"]
    scale: int
    size: int

    @property
    def name(self) -> str:
        return f"sr_x{self.scale}" if self.kind == "sr" else self.kind


def check_multiples(multiples: list[int]) -> None:
    """Raise ValueError unless ``multiples`` is ``[1]`` or ``[1, m1 < ... < mk, 1]``."""
    if multiples == [1]:
        return
    middle = multiples[1:-1]
    if (
        len(multiples) < 3
        or multiples[0] != 1
        or multiples[-1] != 1
        or any(m not in SR_SCALES for m in middle)
        or middle != sorted(set(middle))
    ):
        raise ValueError(
            f"multiples={multiples} is not a pyramid: use [1] (single scale) or "
            f"[1, m1, ..., 1] with increasing SR scales m from {list(SR_SCALES)}, "
            "e.g. [1, 2, 1] (paper) or [1, 2, 4, 1]"
        )


def plan_pyramid(multiples: list[int], image_size: int) -> tuple[Branch, ...]:
    """The branches of ``multiples`` at input side ``image_size``; ValueError if one is too small.

    The smallest branch must survive vgg16_bn's five 2x2 max-pools (at least 32 px).
    """
    check_multiples(multiples)
    if multiples == [1]:
        branches: tuple[Branch, ...] = (Branch("full", 1, image_size),)
    else:
        factor = max(multiples)
        low = image_size // factor
        branches = (
            Branch("low", 1, low),
            *(Branch("sr", m, low * m) for m in multiples[1:-1]),
            Branch("full", 1, image_size),
        )
    smallest = min(branches, key=lambda b: b.size)
    if smallest.size < MIN_BRANCH_SIZE:
        least = MIN_BRANCH_SIZE * max(multiples)
        fewer = "" if multiples == [1] else ", or fewer scales (e.g. multiples=[1])"
        raise ValueError(
            f"image_size={image_size} with multiples={multiples} gives a {smallest.size} px "
            f"{smallest.name} branch, which vgg16_bn's {VGG_NUM_POOLS} max-pools reduce to "
            f"{smallest.size // MIN_BRANCH_SIZE} px. Use image_size >= {least} for these "
            f"multiples{fewer}."
        )
    return branches
