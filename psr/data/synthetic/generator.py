"""One picture at a time: identity + expression + pose + nuisance -> image, votes, parameters.

Every picture has its own random stream seeded by (seed, split, index), so a split can be
generated in chunks, in any order or in parallel, and still give the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from psr.data.labels import EXPRESSIONS
from psr.data.synthetic.config import SPLITS, SynthConfig, class_frequencies
from psr.data.synthetic.crowd import VOTE_COLUMNS, clarity, crowd_votes, majority
from psr.data.synthetic.expressions import actions_for
from psr.data.synthetic.identity import sample_identity
from psr.data.synthetic.nuisance import (
    add_noise,
    apply_lighting,
    blur,
    draw_background,
    draw_occluder,
    jpeg,
    sample_degradations,
)
from psr.data.synthetic.render import build_geometry, draw_face, transform

# Distinct first words keep the random streams of labels and pictures apart.
_LABEL_STREAM, _IMAGE_STREAM = 0x1AB3, 0x1A6E
_FACE_BOX = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])

#: The generation.csv column of the expression each face was rendered with (the crowd's
#: majority label can differ: small or faint faces draw "neutral" votes).
TRUE_LABEL = "true_label"


@dataclass(frozen=True)
class CropView:
    """A tight face crop (FER-like) stored at ``size`` x ``size``, grayscale or BGR."""

    size: int = 48
    gray: bool = True


@dataclass(frozen=True)
class PhotoView:
    """A wider photo with the face somewhere inside; short side upscaled to ``min_side``."""

    min_side: int = 160


View = CropView | PhotoView


@dataclass(frozen=True)
class Sample:
    """One generated picture with its crowd votes and generation parameters."""

    image: np.ndarray  # uint8 [H, W] (gray) or [H, W, 3] (BGR)
    expression: str | None  # true expression (canonical name); None for not-a-face
    votes: np.ndarray  # int64 [10] over VOTE_COLUMNS
    params: dict[str, object]  # generation parameters (generation.csv columns)
    matrix: np.ndarray  # 2x3, face units (face box = -1..1) -> image pixels
    face_box: tuple[int, int, int, int]  # x, y, w, h in image pixels (axis-aligned)
    landmarks: np.ndarray  # float [68, 2] in image pixels (iBUG order)

    @property
    def label(self) -> int:
        """True class index in EXPRESSIONS (FER+ order); -1 for not-a-face."""
        return -1 if self.expression is None else EXPRESSIONS.index(self.expression)

    @property
    def majority(self) -> int:
        """Index into VOTE_COLUMNS of the most-voted column."""
        return majority(self.votes)


def split_id(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {SPLITS}")
    return SPLITS.index(split)


def split_expressions(
    seed: int, split: str, count: int, balance: str, classes: Sequence[str] = EXPRESSIONS
) -> list[str]:
    """True expression of every picture of a split: exact class counts, shuffled."""
    freqs = class_frequencies(balance, tuple(classes))
    quota = np.array([freqs[c] for c in classes]) * count
    counts = np.floor(quota).astype(int)
    # Largest remainders get the leftover pictures, so counts sum to ``count`` exactly.
    counts[np.argsort(counts - quota, kind="stable")[: count - counts.sum()]] += 1
    labels = np.repeat(np.arange(len(classes)), counts)
    np.random.default_rng([_LABEL_STREAM, seed, split_id(split)]).shuffle(labels)
    return [classes[i] for i in labels]


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _face_matrix(scale: float, angle_deg: float, cx: float, cy: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a) * scale, np.sin(a) * scale
    return np.array([[c, -s, cx], [s, c, cy]])


def _resize(image: np.ndarray, w: int, h: int) -> np.ndarray:
    # Shrinking averages (INTER_AREA); enlarging a small source stays blurry (INTER_LINEAR).
    shrink = w * h < image.shape[0] * image.shape[1]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _source_canvas(
    view: View, rng: np.random.Generator, face_px: float, shift: np.ndarray, cfg: SynthConfig
) -> tuple[np.ndarray, float, float]:
    """Empty source picture and the face centre in it; the face is ``face_px`` across its box."""
    if isinstance(view, CropView):
        side = max(8, round(face_px * rng.uniform(*cfg.nuisance.crop_margin)))
        shape = (side, side) if view.gray else (side, side, 3)
        return np.empty(shape, np.uint8), side / 2 + shift[0], side / 2 + shift[1]
    w = round(face_px * rng.uniform(1.6, 3.2))
    h = round(face_px * rng.uniform(1.6, 3.2))
    cx = rng.uniform(0.6 * face_px, w - 0.6 * face_px)
    cy = rng.uniform(0.6 * face_px, h - 0.6 * face_px)
    return np.empty((h, w, 3), np.uint8), cx, cy


def _stored(image: np.ndarray, view: View) -> tuple[np.ndarray, float]:
    """Crops are resized to the format's size; small photos are upscaled. Returns (image, zoom)."""
    h, w = image.shape[:2]
    if isinstance(view, CropView):
        zoom = view.size / w
        out_w = out_h = view.size
    else:
        zoom = max(1.0, view.min_side / min(w, h))
        out_w, out_h = round(w * zoom), round(h * zoom)
    return (image if (out_w, out_h) == (w, h) else _resize(image, out_w, out_h)), zoom


def render_sample(
    cfg: SynthConfig,
    split: str,
    index: int,
    expression: str,
    view: View = CropView(),
    allow_not_a_face: bool = True,
) -> Sample:
    """Generate picture ``index`` of ``split`` showing ``expression`` (canonical name)."""
    if expression not in EXPRESSIONS:
        raise ValueError(f"unknown expression {expression!r}; known: {EXPRESSIONS}")
    rng = np.random.default_rng([_IMAGE_STREAM, cfg.seed, split_id(split), index])
    nz = cfg.nuisance
    not_a_face = allow_not_a_face and rng.uniform() < cfg.not_a_face_rate
    face_px = _log_uniform(rng, *cfg.face_size)
    # Drawn for every class, so that one index gives the same person and scene whatever the class.
    # Density rising linearly over the range: weak expressions are common, most are readable.
    lo, hi = cfg.intensity
    drawn = lo + (hi - lo) * float(np.sqrt(rng.uniform()))
    intensity = 0.0 if expression == "neutral" or not_a_face else drawn
    ident = sample_identity(rng, nz.glasses_rate)
    geom = build_geometry(ident, actions_for(expression, intensity, rng))
    angle = float(
        np.clip(rng.normal(0, nz.rotation_deg), -nz.max_rotation_deg, nz.max_rotation_deg)
    )
    shift = rng.uniform(-nz.translation, nz.translation, 2) * face_px

    canvas, cx, cy = _source_canvas(view, rng, face_px, shift, cfg)
    h, w = canvas.shape[:2]
    matrix = _face_matrix(face_px / 2, angle, cx, cy)

    draw_background(canvas, rng, nz.clutter)
    occlusion, covered = "none", 0.0
    if not not_a_face:
        draw_face(canvas, matrix, ident, geom)
        if rng.uniform() < nz.occlusion_rate:
            occlusion, covered = draw_occluder(canvas, matrix, rng, ident)
    light = apply_lighting(canvas, rng, nz.lighting)
    degrade = sample_degradations(rng, nz, face_px)
    image = blur(canvas, degrade["blur_sigma"])

    image, zoom = _stored(image, view)
    out_h, out_w = image.shape[:2]
    image = jpeg(add_noise(image, rng, degrade["noise_std"]), degrade["jpeg_quality"])
    matrix = matrix * np.array([[out_w / w], [out_h / h]])

    face = None if not_a_face else expression
    clear = 0.0 if not_a_face else clarity(expression, intensity, face_px)
    votes = crowd_votes(rng, face, clear)
    corners = transform(_FACE_BOX, matrix)
    x0, y0 = np.floor(corners.min(0)).astype(int)
    x1, y1 = np.ceil(corners.max(0)).astype(int)
    params: dict[str, object] = {
        "split": split,
        "index": index,
        TRUE_LABEL: expression if face else "not_a_face",
        "majority": VOTE_COLUMNS[majority(votes)],
        "intensity": round(intensity, 4),
        "clarity": round(clear, 4),
        "face_size": round(face_px, 2),
        "stored_zoom": round(zoom, 4),
        "rotation_deg": round(angle, 2),
        "shift_x": round(float(shift[0] / face_px), 4),
        "shift_y": round(float(shift[1] / face_px), 4),
        "occlusion": occlusion,
        "occlusion_area": round(covered, 3),
        "glasses": int(ident.glasses),
        "hair_style": ident.hair_style,
        "light_gain": round(light["light_gain"], 3),
        "light_gradient": round(light["light_gradient"], 3),
        "blur_sigma": round(degrade["blur_sigma"] * zoom, 3),  # in stored-image pixels
        "noise_std": round(degrade["noise_std"], 2),
        "jpeg_quality": degrade["jpeg_quality"],
    }
    return Sample(
        image=image,
        expression=face,
        votes=votes,
        params=params,
        matrix=matrix,
        face_box=(int(x0), int(y0), int(x1 - x0), int(y1 - y0)),
        landmarks=transform(geom.landmarks, matrix),
    )


def generate_samples(
    cfg: SynthConfig,
    split: str,
    view: View = CropView(),
    classes: Sequence[str] = EXPRESSIONS,
    start: int = 0,
    stop: int | None = None,
    allow_not_a_face: bool = True,
) -> Iterator[Sample]:
    """Pictures ``start..stop`` of ``split`` (default: all ``cfg.count(split)`` of them)."""
    count = cfg.count(split)
    expressions = split_expressions(cfg.seed, split, count, cfg.class_balance, classes)
    for index in range(start, count if stop is None else min(stop, count)):
        yield render_sample(cfg, split, index, expressions[index], view, allow_not_a_face)
