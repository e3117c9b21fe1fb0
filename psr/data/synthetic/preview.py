"""Contact sheet of the generator: one labelled row per expression, one column per picture."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from psr.data.labels import EXPRESSIONS
from psr.data.synthetic.config import SynthConfig
from psr.data.synthetic.generator import CropView, render_sample, split_expressions
from psr.fileio import atomic_write

_LABEL_W = 110  # px for the row labels
_FOOTER = 14  # px under each picture: intensity and source face size


def _indices(cfg: SynthConfig, expression: str, n: int) -> list[int]:
    """Training pictures that show ``expression`` (then pictures beyond the split, if too few)."""
    labels = split_expressions(cfg.seed, "train", cfg.train, cfg.class_balance)
    found = [i for i, e in enumerate(labels) if e == expression][:n]
    extra = cfg.train + EXPRESSIONS.index(expression) * n
    return found + list(range(extra, extra + n - len(found)))


def _cell(image: np.ndarray, caption: str, size: int) -> np.ndarray:
    cell = np.full((size + _FOOTER, size, 3), 255, np.uint8)
    cell[:size] = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    cv2.putText(
        cell, caption, (2, size + 11), cv2.FONT_HERSHEY_PLAIN, 0.8, (0, 0, 0), 1, cv2.LINE_AA
    )
    return cell


def render_preview(
    cfg: SynthConfig, samples_per_class: int = 8, size: int = 96, gray: bool = False
) -> np.ndarray:
    """The contact sheet as a BGR image; captions are ``intensity / face size in source px``."""
    if samples_per_class < 1:
        raise ValueError(f"samples_per_class must be >= 1, got {samples_per_class}")
    view = CropView(size, gray=gray)
    rows = []
    for expression in EXPRESSIONS:
        cells = []
        for index in _indices(cfg, expression, samples_per_class):
            sample = render_sample(cfg, "train", index, expression, view, allow_not_a_face=False)
            p = sample.params
            caption = (
                f"{p['intensity']:.2f} {p['face_size']:.0f}px"
                if size >= 80
                else f"{p['intensity']:.1f}"
            )
            cells.append(_cell(sample.image, caption, size))
        label = np.full((size + _FOOTER, _LABEL_W, 3), 255, np.uint8)
        cv2.putText(
            label,
            expression,
            (4, size // 2 + 6),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.55,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
        rows.append(np.hstack([label, *cells]))
    return np.vstack(rows)


def write_preview(
    path: str | Path,
    cfg: SynthConfig | None = None,
    samples_per_class: int = 8,
    size: int = 96,
    gray: bool = False,
) -> Path:
    """Write the contact sheet PNG atomically; returns its path."""
    out = Path(path)
    ok, buf = cv2.imencode(
        ".png", render_preview(cfg or SynthConfig(), samples_per_class, size, gray)
    )
    if not ok:
        raise RuntimeError("OpenCV failed to encode the preview PNG")
    return atomic_write(out, buf.tobytes())
