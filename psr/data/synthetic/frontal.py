"""A plain, upright, frontal drawn face: what OpenCV's frontal Haar cascade detects.

The in-the-wild renderer's faces are stylised and often rotated or occluded; detection tests and
benchmarks need one the classic detector finds reliably at any size.
"""

from __future__ import annotations

import cv2
import numpy as np


def frontal_face(size: int) -> np.ndarray:
    """A gray face (skin oval, brows, eyes, nose, mouth) on a darker ground: ``[size, size]``."""
    img = np.full((size, size), 90, np.uint8)
    c = size // 2

    def px(f: float) -> int:
        return max(1, int(size * f))

    cv2.ellipse(img, (c, c), (px(0.36), px(0.46)), 0, 0, 360, 200, -1)
    for side in (-1, 1):
        ex, ey = c + side * px(0.16), c - px(0.08)
        cv2.ellipse(img, (ex, ey - px(0.09)), (px(0.1), px(0.025)), 0, 180, 360, 40, -1)
        cv2.ellipse(img, (ex, ey), (px(0.08), px(0.04)), 0, 0, 360, 250, -1)
        cv2.circle(img, (ex, ey), px(0.035), 20, -1)
    cv2.ellipse(img, (c, c + px(0.1)), (px(0.05), px(0.03)), 0, 0, 360, 150, -1)
    cv2.ellipse(img, (c, c + px(0.25)), (px(0.14), px(0.05)), 0, 0, 360, 60, -1)
    return cv2.GaussianBlur(img, (0, 0), size / 100)
