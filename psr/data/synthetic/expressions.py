"""Facial action parameters of the eight FER+ expressions.

An expression is a point in a small space of facial actions (a coarse stand-in for FACS action
units). Each expression has a prototype at full intensity; a face shows ``intensity * prototype``
plus a little per-face idiosyncrasy, so intensity 0 is a neutral face and weak expressions are
genuinely ambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from psr.data.labels import EXPRESSIONS


@dataclass(frozen=True)
class Actions:
    """Facial actions, all 0 on a neutral face; roughly -1..1 at full intensity."""

    mouth_curve: float = 0.0  # corners up (+, smile) or down (-, frown)
    mouth_open: float = 0.0  # jaw drop / lips apart
    mouth_width: float = 0.0  # stretched (+) or pursed/pressed (-)
    lip_asym: float = 0.0  # one corner raised (unilateral, contempt)
    brow_raise: float = 0.0  # whole brow up (+) or lowered (-)
    brow_inner: float = 0.0  # inner ends up (+, sad/fear) or pulled down (-, anger)
    eye_open: float = 0.0  # widened (+) or narrowed (-)
    nose_wrinkle: float = 0.0  # nose wrinkler + upper lip raiser (disgust)
    cheek_raise: float = 0.0  # cheeks up, nasolabial folds (Duchenne smile)
    teeth: float = 0.0  # how much teeth show when the mouth is open


PROTOTYPES: dict[str, Actions] = {
    "neutral": Actions(),
    "happiness": Actions(
        mouth_curve=1.0,
        mouth_open=0.35,
        mouth_width=0.45,
        eye_open=-0.35,
        cheek_raise=1.0,
        teeth=1.0,
    ),
    "surprise": Actions(
        mouth_open=1.0,
        mouth_width=-0.35,
        brow_raise=1.0,
        brow_inner=0.1,
        eye_open=0.9,
    ),
    "sadness": Actions(
        mouth_curve=-0.9,
        mouth_width=-0.05,
        brow_raise=0.05,
        brow_inner=1.0,
        eye_open=-0.35,
    ),
    "anger": Actions(
        mouth_curve=-0.35,
        mouth_width=-0.25,
        brow_raise=-0.8,
        brow_inner=-1.0,
        eye_open=0.1,
        mouth_open=0.05,
    ),
    "disgust": Actions(
        mouth_curve=-0.55,
        mouth_open=0.2,
        mouth_width=-0.05,
        brow_raise=-0.45,
        brow_inner=-0.35,
        eye_open=-0.45,
        nose_wrinkle=1.0,
        teeth=0.6,
    ),
    "fear": Actions(
        mouth_curve=-0.35,
        mouth_open=0.55,
        mouth_width=0.45,
        brow_raise=0.75,
        brow_inner=0.8,
        eye_open=1.0,
        teeth=0.4,
    ),
    "contempt": Actions(mouth_curve=0.1, lip_asym=1.0, mouth_width=-0.05, eye_open=-0.1),
}

ACTION_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Actions))

_LIP_ASYM = ACTION_NAMES.index("lip_asym")
_PROTO = {name: np.array([getattr(a, n) for n in ACTION_NAMES]) for name, a in PROTOTYPES.items()}

# Per-face idiosyncrasy (std, in action units): resting faces are not all identical.
_IDIOSYNCRASY = 0.07


def actions_for(expression: str, intensity: float, rng: np.random.Generator) -> Actions:
    """The actions of ``expression`` shown at ``intensity`` (0..1) by one face."""
    if expression not in PROTOTYPES:
        raise ValueError(f"unknown expression {expression!r}; known: {EXPRESSIONS}")
    proto = _PROTO[expression]
    jitter = rng.normal(0.0, _IDIOSYNCRASY, size=proto.shape) * (1.0 + 0.15 * np.abs(proto))
    values = intensity * proto * rng.uniform(0.85, 1.15) + jitter
    # Unilateral actions (contempt's raised corner) happen on either side of the face.
    if rng.uniform() < 0.5:
        values[_LIP_ASYM] = -values[_LIP_ASYM]
    return Actions(*(float(v) for v in values))
