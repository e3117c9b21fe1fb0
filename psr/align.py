"""Face alignment: a similarity transform from five landmarks onto a fixed template.

RAF-DB's aligned images and AffectNet's training crops put the eyes and mouth at nearly fixed
places; a detector box cropped as it is leaves faces tilted and shifted, which costs accuracy.
Aligning inference crops (and, with ``psr prepare --align-faces``, the crops of datasets of whole
photos) the same way closes that gap.

The template is the standard five-point layout of insightface's ArcFace ``arcface_dst`` (a
112 x 112 face: eye centres, nose tip, mouth corners), scaled to the output size. RAF-DB aligned
its 100 x 100 images with a similarity transform on its five manual landmarks (Li et al., CVPR
2017) but published no template; the ArcFace layout is the widely used one of the same kind and
frames the face alike (eyes a little below the top third, the mouth above the chin).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import cv2
import numpy as np

from psr.detect import Box, crop_face

#: ArcFace's five points in a 112 x 112 crop, LANDMARK_NAMES order (insightface
#: ``python-package/insightface/utils/face_align.py``, ``arcface_dst``).
TEMPLATE_SIZE = 112
TEMPLATE = np.array(
    [
        [38.2946, 51.6963],  # left eye (image left)
        [73.5318, 51.5014],  # right eye
        [56.0252, 71.7366],  # nose tip
        [41.5493, 92.3655],  # mouth, left corner
        [70.7299, 92.2041],  # mouth, right corner
    ],
    dtype=np.float64,
)


def template_points(size: int) -> np.ndarray:
    """The template scaled to a ``size`` x ``size`` crop, ``[5, 2]``."""
    return TEMPLATE * (size / TEMPLATE_SIZE)


def five_from_ibug68(points: np.ndarray) -> np.ndarray:
    """The five template landmarks from 68 iBUG points ``[68, 2]`` (the synthetic generator's):
    eye centres (the subject's right eye, 36-41, is on the image's left), nose tip, mouth
    corners."""
    points = np.asarray(points, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"expected 68 iBUG landmarks [68, 2], got shape {points.shape}")
    return np.stack(
        [points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]]
    )


def alignment_matrix(landmarks: Sequence[Sequence[float]] | np.ndarray, size: int) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, shift) mapping ``landmarks`` (five ``(x, y)``
    points in image pixels) onto the template of a ``size`` crop, least squares over the five."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2) or not np.all(np.isfinite(points)):
        raise ValueError(f"alignment needs five finite (x, y) landmarks, got shape {points.shape}")
    if size < 8:
        raise ValueError(f"aligned crop size must be >= 8, got {size}")
    return _similarity_lstsq(points, template_points(size))


def _similarity_lstsq(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity minimising the squared distances from ``src`` to ``dst`` (Umeyama
    1991, closed form): all five points weigh equally. A robust fit (LMEDS) would pick the best
    subset of five noisy landmarks, which moves the crop between video frames."""
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    variance = (src_c**2).sum() / len(src)
    if variance < 1e-12:  # all points equal: no rotation or scale fits
        raise ValueError(f"cannot align: degenerate landmarks {src.round(1).tolist()}")
    u, singular, vt = np.linalg.svd(dst_c.T @ src_c / len(src))
    reflect = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ reflect @ vt
    scale = float((singular * np.diag(reflect)).sum() / variance)
    shift = dst_mean - scale * rotation @ src_mean
    return np.c_[scale * rotation, shift]


def align_face(
    image: np.ndarray, landmarks: Sequence[Sequence[float]] | np.ndarray, size: int
) -> np.ndarray:
    """The face warped so its landmarks sit on the template: ``[size, size(, C)]``, edges
    replicated where the crop leaves the image."""
    matrix = alignment_matrix(landmarks, size)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < 0.5:  # warpAffine's bilinear sampling aliases when shrinking more than 2x
        shrink = 2 * scale
        small = (max(1, round(image.shape[1] * shrink)), max(1, round(image.shape[0] * shrink)))
        image = cv2.resize(image, small, interpolation=cv2.INTER_AREA)
        matrix = np.hstack([matrix[:, :2] / shrink, matrix[:, 2:]])
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def face_input(
    image: np.ndarray, box: Box, size: int, *, align: bool = True, margin: float = 0.2
) -> np.ndarray:
    """The classifier's input for one detected face: aligned onto the template (``size`` px)
    when ``align`` is on and the detector gave landmarks, else the box with ``margin`` (resized
    by the model's transform). Every caller that turns boxes into crops asks this function."""
    if align and box.landmarks is not None:
        return align_face(image, box.landmarks, size)
    return crop_face(image, box, margin=margin)


@functools.cache
def _landmark_detector():  # one per process (prepare's workers each load their own)
    from psr.detect_mtcnn import MTCNNDetector

    return MTCNNDetector(threads=1)


def align_largest_face(image: np.ndarray, size: int, *, name: str = "image") -> np.ndarray:
    """Detect faces with MTCNN and align the largest one (``psr prepare --align-faces``).
    ValueError naming ``name`` when no face is found."""
    boxes = _landmark_detector().detect(image)
    if not boxes:
        raise ValueError(f"{name}: no face found to align")
    aligned = align_face(image, boxes[0].landmarks, size)
    return aligned if aligned.ndim == image.ndim else aligned[:, :, None]
