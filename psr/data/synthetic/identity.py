"""Who is in the picture: face shape, feature placement, skin, hair and accessories."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Color = tuple[float, float, float]  # BGR, 0..255

_SKIN_LIGHT = np.array([170.0, 195.0, 235.0])
_SKIN_DARK = np.array([45.0, 70.0, 105.0])
_HAIR = np.array(
    [
        [22.0, 22.0, 28.0],  # black
        [30.0, 48.0, 80.0],  # dark brown
        [45.0, 80.0, 125.0],  # brown
        [95.0, 165.0, 205.0],  # blond
        [155.0, 155.0, 160.0],  # grey
        [35.0, 65.0, 150.0],  # red
    ]
)
_HAIR_P = np.array([0.35, 0.25, 0.15, 0.1, 0.08, 0.07])
_IRIS = np.array([[20.0, 40.0, 70.0], [35.0, 60.0, 40.0], [110.0, 80.0, 50.0], [15.0, 20.0, 30.0]])
HAIR_STYLES: tuple[str, ...] = ("short", "long", "bald", "fringe")


@dataclass(frozen=True)
class Identity:
    """Static appearance of one synthetic person (face units: the face box spans -1..1)."""

    face_width: float
    face_height: float
    jaw: float  # 0 round .. 1 pointed chin
    eye_y: float
    eye_spacing: float
    eye_size: float
    brow_gap: float
    brow_thickness: float
    nose_length: float
    mouth_y: float
    mouth_size: float
    lip_thickness: float
    skin: Color
    hair: Color
    brow: Color
    lips: Color
    iris: Color
    clothes: Color
    hair_style: str
    hairline: float
    glasses: bool


def _color(values: np.ndarray) -> Color:
    b, g, r = (min(max(float(v), 0.0), 255.0) for v in values)
    return (b, g, r)


# Uniform ranges of the shape parameters, drawn in one call (numpy call overhead dominates).
_SHAPE_RANGES = {
    "face_width": (0.86, 1.06),
    "face_height": (0.92, 1.04),
    "jaw": (0.0, 1.0),
    "eye_y": (-0.24, -0.14),
    "eye_spacing": (0.9, 1.08),
    "eye_size": (0.85, 1.15),
    "brow_gap": (0.15, 0.2),
    "brow_thickness": (0.8, 1.3),
    "nose_length": (0.9, 1.1),
    "mouth_y": (0.4, 0.48),
    "mouth_size": (0.88, 1.12),
    "lip_thickness": (0.7, 1.3),
    "hairline": (-0.72, -0.58),
}
_LOW = np.array([lo for lo, _ in _SHAPE_RANGES.values()])
_SPAN = np.array([hi - lo for lo, hi in _SHAPE_RANGES.values()])
_STYLE_P = np.array([0.45, 0.3, 0.08, 0.17])


def sample_identity(rng: np.random.Generator, glasses_rate: float) -> Identity:
    """A random person; feature placement stays within plausible human proportions."""
    shape = _LOW + _SPAN * rng.uniform(size=len(_LOW))
    u = rng.uniform(size=6)  # skin tone, hair colour, hair shade, iris, style, glasses
    skin = _SKIN_LIGHT + u[0] * (_SKIN_DARK - _SKIN_LIGHT) + rng.normal(0, 4, 3)
    hair = _HAIR[np.searchsorted(np.cumsum(_HAIR_P), u[1] * 0.9999)] * (0.85 + 0.3 * u[2])
    brow = 0.45 * hair + 0.55 * np.minimum(skin * 0.35, 60.0)
    lips = skin * np.array([0.7, 0.62, 0.85]) + np.array([0.0, 0.0, 10.0])
    style = int(np.searchsorted(np.cumsum(_STYLE_P), u[4] * 0.9999))
    return Identity(
        **{name: float(v) for name, v in zip(_SHAPE_RANGES, shape, strict=True)},
        skin=_color(skin),
        hair=_color(hair),
        brow=_color(brow),
        lips=_color(lips),
        iris=_color(_IRIS[int(u[3] * len(_IRIS))]),
        clothes=_color(rng.uniform(20, 235, 3)),
        hair_style=HAIR_STYLES[style],
        glasses=bool(u[5] < glasses_rate),
    )
