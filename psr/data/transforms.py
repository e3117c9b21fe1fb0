"""Image presets: training augmentation, evaluation and the paper's test-time augmentation (TTA).

Every preset is an :class:`ImageTransform`: call it on a uint8 image ``[H, W]``, ``[H, W, 1]`` or
``[H, W, 3]`` and get a float tensor ``[3, S, S]`` normalised with ImageNet statistics. Grayscale
sources (FER+) are expanded to three channels first, because the VGG backbone expects RGB.

The augmentation mirrors fastai v1 ``get_transforms`` as used by the official PSR code: each of
flip, warp, rotation and zoom is drawn independently (affine ones with ``p_affine``), brightness and
contrast each with ``p_lighting``, with fastai's parameter distributions: the symmetric warp and
the logit-space lighting are re-implemented here (:class:`SymmetricWarp`, :class:`LogitLighting`),
zoom is a random square crop resized back. fastai resamples the whole affine grid once; here each
step is resampled on the image already resized to S, with reflection padding (fastai's default
``padding_mode``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Literal

import albumentations as A
import cv2
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: fastai v1 ``TTA(beta=0.4, scale=1.1)``: final = beta * plain + (1 - beta) * mean(views).
TTA_BETA: float = 0.4
#: Zoom of the TTA views: crops of side S / 1.1 at the four corners, each with and without flip.
TTA_SCALE: float = 1.1
#: The official evaluation repeats TTA (whose views are randomly augmented) three times.
TTA_REPEATS: int = 3

_BORDERS = {"reflect": cv2.BORDER_REFLECT_101, "constant": cv2.BORDER_CONSTANT}


class AugmentConfig(BaseModel):
    """Training augmentation knobs; defaults are the paper's FER+ values (RAF-DB: ``rafdb()``)."""

    model_config = ConfigDict(extra="forbid")

    flip: bool = Field(True, description="random horizontal flip with p = 0.5")
    rotate: float = Field(30.0, ge=0, description="max rotation in degrees (FER+ 30, RAF-DB 15)")
    zoom: float = Field(
        1.2, ge=1.0, description="max zoom factor, random centre (FER+ 1.2, RAF 1.1)"
    )
    lighting: float = Field(
        0.2, ge=0, lt=1, description="max brightness and contrast change (fastai, logit space)"
    )
    warp: float = Field(
        0.2, ge=0, lt=1, description="max symmetric perspective warp (fastai units, [-1, 1])"
    )
    p_affine: float = Field(0.75, ge=0, le=1, description="probability of each affine step")
    p_lighting: float = Field(0.75, ge=0, le=1, description="probability of each lighting step")
    border: Literal["reflect", "constant"] = Field(
        "reflect", description="padding of pixels moved in from outside (fastai: reflection)"
    )
    fill: float = Field(0.0, ge=0, le=255, description="border value when border='constant'")

    @classmethod
    def rafdb(cls) -> AugmentConfig:
        """The official RAF-DB values: rotation 15 degrees, zoom 1.1."""
        return cls(rotate=15.0, zoom=1.1)


class ImageTransform:
    """uint8 image ``[H, W(, C)]`` -> float tensor ``[3, S, S]`` through an albumentations Compose.

    ``reseed(seed)`` makes the next call reproducible: the training dataset reseeds per sample so
    that augmentation depends only on (seed, epoch, position), whatever the worker layout.
    """

    def __init__(self, steps: Sequence[A.BasicTransform]):
        self.compose = A.Compose(list(steps))

    def reseed(self, seed: int) -> None:
        self.compose.set_random_state(np.random.default_rng(seed), random.Random(seed))

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return self.compose(image=as_rgb(image))["image"]

    def __repr__(self) -> str:
        return f"ImageTransform({self.compose!r})"


def as_rgb(image: np.ndarray) -> np.ndarray:
    """``[H, W]`` or ``[H, W, 1]`` -> ``[H, W, 3]`` by repeating the gray channel; RGB passes."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"expected an image [H, W], [H, W, 1] or [H, W, 3], got {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)  # [H, W, 1] -> [H, W, 3]
    return image


def _finish() -> list[A.BasicTransform]:
    return [A.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD), A.ToTensorV2()]


def _augment_steps(
    aug: AugmentConfig, image_size: int, *, for_tta: bool = False
) -> list[A.BasicTransform]:
    """fastai v1 ``get_transforms`` order: flip, warp, rotate, zoom, brightness, contrast.

    ``for_tta`` drops flip and zoom, which the TTA views set deterministically instead.
    """
    border = {"border_mode": _BORDERS[aug.border], "fill": aug.fill}
    steps: list[A.BasicTransform] = []
    if aug.flip and not for_tta:
        steps.append(A.HorizontalFlip(p=0.5))
    if aug.warp > 0:
        steps.append(SymmetricWarp(aug.warp, p=aug.p_affine, **border))
    if aug.rotate > 0:
        steps.append(A.Affine(rotate=(-aug.rotate, aug.rotate), p=aug.p_affine, **border))
    if aug.zoom > 1 and not for_tta:
        # fastai's rand_zoom: one scale for both axes and a uniform position of the zoomed view
        # inside the image (no border shows), i.e. a square crop of side S / zoom resized to S.
        # Here the crop's area is uniform in [1 / zoom^2, 1] (fastai: the zoom is uniform).
        steps.append(
            A.RandomResizedCrop(
                size=(image_size, image_size),
                scale=(1 / aug.zoom**2, 1.0),
                ratio=(1.0, 1.0),
                p=aug.p_affine,
            )
        )
    if aug.lighting > 0:
        steps.append(LogitLighting("brightness", aug.lighting, p=aug.p_lighting))
        steps.append(LogitLighting("contrast", aug.lighting, p=aug.p_lighting))
    return steps


class SymmetricWarp(A.ImageOnlyTransform):
    """fastai v1 ``symmetric_warp``: a perspective warp that moves the corners of each edge
    symmetrically along it by ``m_i`` uniform in [-magnitude, magnitude], in [-1, 1] coordinates
    (so at most magnitude / 2 of the side)."""

    def __init__(self, magnitude: float, border_mode: int, fill: float, p: float):
        super().__init__(p=p)
        self.magnitude, self.border_mode, self.fill = magnitude, border_mode, fill

    def get_params(self) -> dict[str, list[float]]:
        return {"m": [self.py_random.uniform(-self.magnitude, self.magnitude) for _ in range(4)]}

    def apply(self, img: np.ndarray, m: Sequence[float], **params: object) -> np.ndarray:
        height, width = img.shape[:2]
        # fastai's _orig_pts -> targ_pts, (x, y) in [-1, 1]: each input corner lands on its target
        orig = [(-1, -1), (-1, 1), (1, -1), (1, 1)]
        targ = [
            (-1 - m[3], -1 - m[1]),
            (-1 - m[2], 1 + m[1]),
            (1 + m[3], -1 - m[0]),
            (1 + m[2], 1 + m[0]),
        ]

        def pixels(points: list[tuple[float, float]]) -> np.ndarray:
            return np.float32(
                [((x + 1) / 2 * (width - 1), (y + 1) / 2 * (height - 1)) for x, y in points]
            )

        matrix = cv2.getPerspectiveTransform(pixels(orig), pixels(targ))  # [3, 3]
        return cv2.warpPerspective(
            img, matrix, (width, height), borderMode=self.border_mode, borderValue=self.fill
        )

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("magnitude", "border_mode", "fill")


class LogitLighting(A.ImageOnlyTransform):
    """fastai v1 ``brightness`` / ``contrast`` for uint8 images: both act on logit(pixel / 255),
    so black and white stay saturated. brightness adds logit(change) with change uniform in
    0.5 * (1 -+ max); contrast multiplies by a log-uniform scale in [1 - max, 1 / (1 - max)]."""

    def __init__(self, kind: Literal["brightness", "contrast"], max_change: float, p: float):
        super().__init__(p=p)
        if not 0 < max_change < 1:
            raise ValueError(f"max_change must be in (0, 1), got {max_change}")
        self.kind, self.max_change = kind, max_change

    def get_params(self) -> dict[str, float]:
        m = self.max_change
        if self.kind == "brightness":
            change = self.py_random.uniform(0.5 * (1 - m), 0.5 * (1 + m))
            return {"shift": math.log(change / (1 - change)), "scale": 1.0}
        log_scale = self.py_random.uniform(math.log(1 - m), -math.log(1 - m))
        return {"shift": 0.0, "scale": math.exp(log_scale)}

    def apply(self, img: np.ndarray, shift: float, scale: float, **params: object) -> np.ndarray:
        x = np.clip(np.arange(256) / 255, 1e-7, 1 - 1e-7)  # fastai's logit_ clamp
        logit = np.log(x / (1 - x)) * scale + shift
        lut = np.rint(255 / (1 + np.exp(-logit))).astype(np.uint8)  # [256] pixel -> pixel
        return cv2.LUT(img, lut)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("kind", "max_change")


def train_transform(image_size: int, aug: AugmentConfig | None = None) -> ImageTransform:
    """Resize to S, then the paper's random augmentation, then ImageNet normalisation."""
    aug = aug or AugmentConfig()
    return ImageTransform(
        [A.Resize(image_size, image_size), *_augment_steps(aug, image_size), *_finish()]
    )


def eval_transform(image_size: int) -> ImageTransform:
    """Resize to S and normalise: the plain (un-augmented) view."""
    return ImageTransform([A.Resize(image_size, image_size), *_finish()])


def tta_transforms(
    image_size: int, aug: AugmentConfig | None = None, scale: float = TTA_SCALE
) -> list[ImageTransform]:
    """The 8 TTA views of fastai v1 ``_tta_only``: zoom ``scale`` anchored at each of the four
    corners, with and without a horizontal flip, after the training augmentation minus flip and
    zoom (so warp, rotation and lighting stay random: average several repeats).

    Combine with :func:`blend_tta`: ``beta * p(plain) + (1 - beta) * mean_v p(view_v)``.
    """
    aug = aug or AugmentConfig()
    crop = max(1, round(image_size / scale))
    far = image_size - crop
    views = []
    for index in range(8):
        top = far if index & 1 else 0
        left = far if index & 2 else 0
        steps = [
            A.Resize(image_size, image_size),
            *_augment_steps(aug, image_size, for_tta=True),
            A.Crop(x_min=left, y_min=top, x_max=left + crop, y_max=top + crop),
            A.Resize(image_size, image_size),
        ]
        if index & 4:
            steps.append(A.HorizontalFlip(p=1.0))
        views.append(ImageTransform([*steps, *_finish()]))
    return views


def blend_tta(
    plain: torch.Tensor, views: Sequence[torch.Tensor], beta: float = TTA_BETA
) -> torch.Tensor:
    """fastai v1 TTA blend of class probabilities ``[B, K]``: plain view weighted ``beta``, the
    mean of the augmented views ``1 - beta``."""
    if not views:
        raise ValueError("blend_tta needs at least one augmented view")
    return beta * plain + (1 - beta) * torch.stack(list(views)).mean(0)
