"""Simulated FER+ crowd: 10 annotators vote over 8 emotions + unknown + NF.

Each annotator votes for the true class with a probability that grows with how *clear* the face is
(expression intensity, source resolution) and otherwise picks from a class-confusion model. The
confusions follow the patterns reported for FER+ (fear<->surprise, sadness->neutral,
disgust<->anger, contempt->neutral/happiness). As intensity falls the mistakes drift towards
neutral, because a weak expression *is* nearly a neutral face.
"""

from __future__ import annotations

import numpy as np

from psr.data.labels import EXPRESSIONS

#: FER+ vote columns, in the order of ``fer2013new.csv``.
VOTE_COLUMNS: tuple[str, ...] = (*EXPRESSIONS, "unknown", "NF")
N_ANNOTATORS = 10

# Where an annotator's vote goes when it is wrong about a clear face (rows sum to 1).
_CONFUSIONS: dict[str, dict[str, float]] = {
    "neutral": {
        "sadness": 0.35,
        "anger": 0.15,
        "contempt": 0.15,
        "happiness": 0.1,
        "surprise": 0.05,
        "unknown": 0.2,
    },
    "happiness": {"neutral": 0.4, "contempt": 0.25, "surprise": 0.15, "unknown": 0.2},
    "surprise": {"fear": 0.55, "happiness": 0.15, "neutral": 0.1, "unknown": 0.2},
    "sadness": {"neutral": 0.45, "fear": 0.15, "anger": 0.1, "disgust": 0.1, "unknown": 0.2},
    "anger": {"disgust": 0.4, "sadness": 0.15, "neutral": 0.15, "contempt": 0.1, "unknown": 0.2},
    "disgust": {"anger": 0.45, "sadness": 0.15, "contempt": 0.1, "neutral": 0.1, "unknown": 0.2},
    "fear": {"surprise": 0.55, "sadness": 0.2, "neutral": 0.05, "unknown": 0.2},
    "contempt": {"neutral": 0.45, "happiness": 0.25, "disgust": 0.1, "unknown": 0.2},
}


def _row(weights: dict[str, float]) -> np.ndarray:
    out = np.zeros(len(VOTE_COLUMNS))
    for name, w in weights.items():
        out[VOTE_COLUMNS.index(name)] = w
    return out / out.sum()


_CONFUSION = np.stack([_row(_CONFUSIONS[e]) for e in EXPRESSIONS])  # [8, 10]
_WEAK = _row({"neutral": 0.8, "unknown": 0.2})  # a weak expression looks neutral
_NOT_A_FACE = _row({"NF": 0.82, "unknown": 0.12, "neutral": 0.03, "surprise": 0.03})


def clarity(expression: str, intensity: float, face_px: float) -> float:
    """How readable the expression is, 0..1: intensity, discounted for tiny source faces."""
    resolution = float(np.clip((face_px - 10.0) / 30.0, 0.35, 1.0))
    if expression == "neutral":
        return 0.8 * resolution
    return float(intensity) * resolution


def vote_distribution(expression: str, clarity_: float) -> np.ndarray:
    """Probability [10] that one annotator votes each column, for a face of this clarity."""
    k = EXPRESSIONS.index(expression)
    # Saturating: moderately intense faces are already fairly clear to annotators.
    p_true = 0.05 + 0.87 * (1 - np.exp(-3.5 * clarity_)) / (1 - np.exp(-3.5))
    wrong = clarity_ * _CONFUSION[k] + (1 - clarity_) * _WEAK
    if expression == "neutral":
        wrong = _CONFUSION[k]
    p = (1 - p_true) * wrong
    p[k] += p_true
    return p / p.sum()


def crowd_votes(rng: np.random.Generator, expression: str | None, clarity_: float) -> np.ndarray:
    """Vote counts [10] of 10 annotators; ``expression=None`` is a not-a-face picture."""
    p = _NOT_A_FACE if expression is None else vote_distribution(expression, clarity_)
    # Annotators differ from picture to picture: a Dirichlet draw around p (over-dispersion).
    p = rng.dirichlet(p * 30.0 + 1e-3)
    return rng.multinomial(N_ANNOTATORS, p).astype(np.int64)


def majority(votes: np.ndarray) -> int:
    """Column with the most votes (ties: the first in FER+ column order)."""
    return int(np.argmax(votes))
