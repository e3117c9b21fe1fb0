"""Predict expressions on images, folders and videos with a trained model.

:class:`Predictor` = model + class names + eval transform + optional face detector. Inputs are
decoded into RGB frames (:func:`iter_frames`), faces are found and cropped (``psr.detect``), the
crops are classified in batches, and every face becomes a :class:`FaceRecord`. A file that cannot
be read, or an image without a face, becomes a record with ``status`` ``"error"`` / ``"no_face"``
and a message: one bad file never aborts a folder.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import cv2
import numpy as np
import torch
from torch import nn

from psr.align import face_input
from psr.data.decode import read_image
from psr.data.transforms import eval_transform
from psr.detect import (
    DETECT_MAX_SIDE,
    Box,
    DetectorKind,
    FaceDetector,
    create_detector,
    to_rgb,
)
from psr.evaluate import predict_batch
from psr.uris import redact

#: Files with these suffixes are read as videos (every ``every``-th frame); anything else is
#: decoded as an image, and reported as an error when that fails.
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})

Status = Literal["ok", "no_face", "error"]
Runtime = Literal["torch", "onnx", "onnx-int8"]
RUNTIMES: tuple[str, ...] = get_args(Runtime)


@dataclass(frozen=True)
class FaceRecord:
    """One face (or one problem) in one frame. ``frame`` is the video frame index and ``time_s``
    its time in seconds (both None for a still image; ``time_s`` None when the video states no
    frame rate); ``box`` is ``(x, y, w, h)`` in original pixels (the whole image without
    detection); ``probabilities`` maps every class name to its probability; ``track`` is the
    face's id across a video's frames (``psr.face_tracks.track_faces``; None untracked)."""

    source: str
    frame: int | None
    box: tuple[int, int, int, int] | None
    expression: str | None
    probability: float | None
    probabilities: dict[str, float] = field(default_factory=dict)
    status: Status = "ok"
    message: str = ""
    time_s: float | None = None
    track: int | None = None

    def as_row(self, class_names: Sequence[str]) -> dict[str, Any]:
        """Flat dict for CSV: box split into x/y/w/h and one ``p_<class>`` column per class."""
        x, y, w, h = self.box if self.box else (None, None, None, None)
        row: dict[str, Any] = {
            "source": self.source,
            "frame": self.frame,
            "time_s": self.time_s,
            "track": self.track,
            "x": x,
            "y": y,
            "w": w,
            "h": h,
            "expression": self.expression,
            "probability": self.probability,
            "status": self.status,
            "message": self.message,
        }
        for name in class_names:
            row[f"p_{name}"] = self.probabilities.get(name)
        return row


@dataclass
class Frame:
    """A decoded RGB frame ``[H, W, 3]`` of ``source`` (``index`` and ``time_s``, the index over
    the frame rate, set for video frames)."""

    source: str
    index: int | None
    image: np.ndarray
    time_s: float | None = None


@dataclass
class FrameResult:
    """A frame and the records of its faces (the frame is None when it could not be read)."""

    frame: Frame | None
    records: list[FaceRecord]


def read_video(path: str | Path, every: int = 30) -> Iterator[Frame]:
    """Every ``every``-th frame of a video (frame 0 first), RGB, with its time (index / frame
    rate; None when the file states no rate). Raises ValueError naming the file if it cannot
    be opened or no frame decodes."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ValueError(f"{path}: cannot open as a video")
        fps = capture.get(cv2.CAP_PROP_FPS)
        index = 0
        decoded = 0
        while capture.grab():  # grab() skips decoding of the frames we do not keep
            if index % every == 0:
                ok, bgr = capture.retrieve()
                if ok:
                    decoded += 1
                    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    yield Frame(str(path), index, rgb, index / fps if fps > 0 else None)
            index += 1
        if decoded == 0:
            raise ValueError(f"{path}: no video frame could be decoded")
    finally:
        capture.release()


def expand_paths(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files as given, folders walked recursively in sorted order (hidden entries skipped).
    A path that does not exist is yielded too, so the caller reports it in order."""
    for path in map(Path, paths):
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root) / name
        else:
            yield path


def iter_frames(paths: Iterable[str | Path], every: int = 30) -> Iterator[Frame | FaceRecord]:
    """Frames of every input, or an ``error`` record for an input that cannot be read."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    for path in expand_paths(paths):
        try:
            if not path.exists():
                raise ValueError(f"{path}: no such file or directory")
            if path.suffix.lower() in VIDEO_SUFFIXES:
                yield from read_video(path, every)
            else:
                yield Frame(str(path), None, read_image(path))
        except ValueError as err:
            yield FaceRecord(str(path), None, None, None, None, status="error", message=str(err))


class Predictor:
    """Expression classifier over face crops, with optional face detection.

    ``detector=None`` treats every input image as one pre-cropped face. ``grayscale=True`` converts
    crops to gray first, for models trained on gray data (FER+). ``align=True`` warps each face
    whose box has landmarks (MTCNN, YuNet) onto the training data's layout (``psr.align``);
    faces without landmarks (Haar) are cropped with ``margin`` instead. ``runtime="onnx"`` exports
    the model once (in memory, BatchNorm folded) and classifies through onnxruntime on the CPU
    with ``threads`` intra-op threads (0: one per core); ``"onnx-int8"`` does the same with the
    int8 graph calibrated on ``calibration``, face crops from the training data prepared as
    predictions are (``psr.quantize.calibration_crops``); ``"torch"`` runs the model eagerly.
    """

    def __init__(
        self,
        model: nn.Module,
        class_names: Sequence[str],
        image_size: int,
        *,
        detector: FaceDetector | None = None,
        margin: float = 0.2,
        align: bool = True,
        grayscale: bool = False,
        device: str | torch.device = "cpu",
        batch_size: int = 32,
        runtime: Runtime = "torch",
        threads: int = 0,
        calibration: Sequence[np.ndarray] | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {list(RUNTIMES)}, got {runtime!r}")
        self.device = torch.device(device)
        if runtime != "torch" and self.device.type != "cpu":
            raise ValueError(f"runtime {runtime!r} runs on the CPU, not on device {self.device}")
        if (calibration is None) == (runtime == "onnx-int8"):
            raise ValueError("calibration images go with runtime 'onnx-int8', and only with it")
        self.model = model.to(self.device).eval()
        self.class_names = tuple(class_names)
        self.image_size = int(image_size)
        self.transform = eval_transform(self.image_size)
        self.detector = detector
        self.margin = margin
        self.align = align
        self.grayscale = grayscale
        self.batch_size = batch_size
        self._onnx = None
        if runtime != "torch":
            from psr.runtime_onnx import OnnxClassifier

            batches = None
            if calibration is not None:
                batches = (batch.numpy() for batch in self.normalised_batches(calibration))
            self._onnx = OnnxClassifier.from_model(self.model, threads=threads, calibration=batches)
        #: The logged model's MLmodel metadata (``from_uri``; empty for a bare checkpoint),
        #: e.g. what it was trained on.
        self.metadata: dict[str, Any] = {}

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        detect: bool = True,
        detector: DetectorKind = "auto",
        yunet_model: str | Path | None = None,
        max_side: int = DETECT_MAX_SIDE,
        threads: int = 0,
        **kwargs: Any,
    ) -> Predictor:
        """Load an inference checkpoint written by ``psr.models.save_model``; ``threads`` is
        the detector's and the ONNX classifier's (0: one per core).

        A checkpoint whose ``extra`` says ``channels: 1`` (trained on gray images) makes the
        predictor convert crops to gray.
        """
        from psr.models import load_model

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        found = None
        if detect:
            found = create_detector(
                detector, yunet_model=yunet_model, max_side=max_side, threads=threads
            )
        model, info = load_model(path, map_location="cpu")
        extra = info.get("extra") or {}
        kwargs.setdefault("grayscale", extra.get("channels") == 1)
        return cls(
            model,
            info["class_names"],
            info["image_size"],
            detector=found,
            threads=threads,
            **kwargs,
        )

    @classmethod
    def from_uri(cls, uri: str, *, tracking_uri: str | None = None, **kwargs: Any) -> Predictor:
        """Load from an MLflow model URI (``models:/psr-fer@champion``, ``runs:/...``) or any
        artifact location: the pyfunc model directory holds the checkpoint as
        ``artifacts/<name>.pt``; a URI to a ``.pt`` file works too.

        ``models:/`` and ``runs:/`` URIs are looked up in the tracking store of
        :func:`tracking_uri_for` (``tracking_uri``, else MLflow's setting), which is also the
        registry unless ``MLFLOW_REGISTRY_URI`` says otherwise."""
        import mlflow.artifacts

        store = tracking_uri_for(uri, tracking_uri)
        location = uri
        if uri.startswith("models:"):
            location = registered_location(uri, store)
        with tempfile.TemporaryDirectory(prefix="psr-model-") as tmp:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=location, dst_path=tmp, tracking_uri=store
                )
            )
            predictor = cls.from_checkpoint(find_checkpoint(local, uri), **kwargs)
            if (local / "MLmodel").is_file():
                from mlflow.models import Model

                predictor.metadata = Model.load(str(local / "MLmodel")).metadata or {}
            return predictor

    def _prepare(self, crop: np.ndarray) -> torch.Tensor:
        if self.grayscale:
            crop = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
        return self.transform(crop)  # [h, w(, 3)] uint8 -> [3, S, S] float

    def normalised_batches(self, faces: Sequence[np.ndarray]) -> Iterator[torch.Tensor]:
        """Face crops (any size, RGB/gray/RGBA uint8) -> normalised ``[B, 3, S, S]`` batches."""
        for start in range(0, len(faces), self.batch_size):
            chunk = faces[start : start + self.batch_size]
            yield torch.stack(
                [self._prepare(to_rgb(f, name=f"image {start + i}")) for i, f in enumerate(chunk)]
            )

    def probabilities(self, faces: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities ``[N, K]`` of pre-cropped faces (any size, RGB/gray/RGBA uint8)."""
        rows = [self._classify(batch) for batch in self.normalised_batches(faces)]
        if not rows:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        return np.concatenate(rows)

    def _classify(self, batch: torch.Tensor) -> np.ndarray:
        """Normalised crops ``[B, 3, S, S]`` -> fused probabilities ``[B, K]``."""
        if self._onnx is not None:
            return self._onnx(batch.numpy())
        fused, _ = predict_batch(self.model, batch.to(self.device))
        return fused.cpu().numpy()

    def _record(self, frame: Frame, box: Box, probs: np.ndarray) -> FaceRecord:
        top = int(probs.argmax())
        return FaceRecord(
            source=frame.source,
            frame=frame.index,
            time_s=frame.time_s,
            box=box.as_tuple(),
            expression=self.class_names[top],
            probability=float(probs[top]),
            probabilities={n: float(p) for n, p in zip(self.class_names, probs, strict=True)},
        )

    def _faces(self, frame: Frame) -> tuple[list[Box], list[np.ndarray]]:
        """Face boxes and crops of a frame; without a detector the whole frame is the face."""
        if self.detector is None:
            height, width = frame.image.shape[:2]
            return [Box(0, 0, width, height)], [frame.image]
        boxes = self.detector.detect(frame.image)
        return boxes, [self._crop(frame.image, b) for b in boxes]

    def _crop(self, image: np.ndarray, box: Box) -> np.ndarray:
        return face_input(image, box, self.image_size, align=self.align, margin=self.margin)

    def predict_frames(self, frames: Iterable[Frame | FaceRecord]) -> Iterator[FrameResult]:
        """Detect, crop and classify, in input order; faces of consecutive frames share batches."""
        pending: list[tuple[Frame, list[Box], list[np.ndarray]]] = []

        def flush() -> Iterator[FrameResult]:
            crops = [c for _, _, cs in pending for c in cs]
            probs = iter(self.probabilities(crops))
            for frame, boxes, _ in pending:
                yield FrameResult(frame, [self._record(frame, b, next(probs)) for b in boxes])
            pending.clear()

        for item in frames:
            if isinstance(item, FaceRecord):  # an input that could not be read
                yield from flush()
                yield FrameResult(None, [item])
                continue
            boxes, crops = self._faces(item)
            if not boxes:
                yield from flush()
                where = "" if item.index is None else f" in frame {item.index}"
                message = f"{item.source}: no face found{where}"
                record = FaceRecord(
                    item.source,
                    item.index,
                    None,
                    None,
                    None,
                    status="no_face",
                    message=message,
                    time_s=item.time_s,
                )
                yield FrameResult(item, [record])
                continue
            pending.append((item, boxes, crops))
            if sum(len(cs) for _, _, cs in pending) >= self.batch_size:
                yield from flush()
        yield from flush()

    def predict_arrays(
        self, images: Sequence[np.ndarray] | np.ndarray, *, source: str = "array"
    ) -> list[FaceRecord]:
        """Records for in-memory images (RGB, gray or RGBA uint8). Without a detector each image
        is one face, so record ``i`` belongs to image ``i``; its ``source`` is ``"array[i]"``."""
        frames: list[Frame | FaceRecord] = []
        for i, image in enumerate(images):
            name = f"{source}[{i}]"
            try:
                frames.append(Frame(name, None, to_rgb(image, name=name)))
            except ValueError as err:
                frames.append(
                    FaceRecord(name, None, None, None, None, status="error", message=str(err))
                )
        return [r for result in self.predict_frames(frames) for r in result.records]

    def predict_paths(self, paths: Iterable[str | Path], *, every: int = 30) -> list[FaceRecord]:
        """Records for files, folders (recursively) and videos (every ``every``-th frame)."""
        results = self.predict_frames(iter_frames(paths, every))
        return [r for result in results for r in result.records]


TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
#: MLflow's default tracking store: ``mlflow.db`` in the working directory.
DEFAULT_DATABASE = "mlflow.db"
#: Model URIs that name an entry of a tracking store or registry (the others are locations).
TRACKED_SCHEMES = ("models:", "runs:")


def tracking_uri_for(model_uri: str, tracking_uri: str | None = None) -> str | None:
    """The tracking URI ``model_uri`` is read from: ``tracking_uri``, else the one MLflow is
    set to (``MLFLOW_TRACKING_URI``, ``mlflow.set_tracking_uri``), else MLflow's default
    ``mlflow.db`` in the working directory when that file exists; None for a location
    (a folder, ``file://``, ``s3://`` ...), which needs no tracking store.

    A read never creates a database (MLflow creates an empty one for a SQLite URI whose file is
    missing): no URI and no ``mlflow.db``, or a SQLite file that does not exist, is a
    FileNotFoundError that says what to set."""
    if not model_uri.startswith(TRACKED_SCHEMES):
        return None
    import mlflow

    if tracking_uri is None and mlflow.tracking.is_tracking_uri_set():
        tracking_uri = mlflow.get_tracking_uri()
    hint = (
        f"pass tracking_uri (psr predict --tracking-uri) or set {TRACKING_URI_ENV} to the "
        "store that holds it, e.g. sqlite:////path/to/repo/mlflow.db, the database the "
        "pipeline writes at its repository root"
    )
    if tracking_uri is None:
        if not Path(DEFAULT_DATABASE).is_file():
            raise FileNotFoundError(
                f"{model_uri}: no MLflow tracking URI is set and {Path.cwd()} has no "
                f"{DEFAULT_DATABASE}: {hint}"
            )
        tracking_uri = f"sqlite:///{Path(DEFAULT_DATABASE).resolve()}"
    database = sqlite_file(tracking_uri)
    if database is not None and not database.is_file():
        raise FileNotFoundError(
            f"{model_uri}: the tracking database {database.resolve()} "
            f"({redact(tracking_uri)}) does not exist: {hint}"
        )
    return tracking_uri


def registered_location(model_uri: str, tracking_uri: str) -> str:
    """Where the files of a ``models:/`` URI (a version, an alias, a logged model's id, with an
    optional path inside) lie, looked up in ``tracking_uri`` (the registry too, unless
    ``MLFLOW_REGISTRY_URI`` says otherwise). Resolved here with a client of that store: MLflow's
    own download looks the name up in its global registry setting whatever it is given."""
    import posixpath

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
    from mlflow.store.artifact.utils.models import get_model_name_and_version

    registry = os.environ.get("MLFLOW_REGISTRY_URI") or tracking_uri
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=registry)
    base, inner = ModelsArtifactRepository.split_models_uri(model_uri)
    try:
        found = get_model_name_and_version(client, base)
        if len(found) == 1:  # models:/<model id>
            location = client.get_logged_model(found[0]).artifact_location
        else:
            location = client.get_model_version_download_uri(*found)
    except MlflowException as err:
        if err.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        raise ValueError(
            f"{model_uri}: {redact(err.message)} (looked up in {redact(registry)}; pass "
            f"tracking_uri (psr predict --tracking-uri) or set {TRACKING_URI_ENV} to the store "
            "that has it)"
        ) from None
    return posixpath.join(location, inner) if inner else location


def sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the working directory unless
    absolute, ``sqlite:////abs/path``); None for other URIs and in-memory databases."""
    from urllib.parse import unquote

    if not uri.startswith("sqlite:///"):
        return None
    path = unquote(uri.removeprefix("sqlite:///").split("?", 1)[0])
    return Path(path) if path and path != ":memory:" else None


def find_checkpoint(local: Path, uri: str) -> Path:
    """The ``.pt`` checkpoint in a downloaded MLflow model (``artifacts/*.pt``) or the file."""
    if local.is_file():
        return local
    found = sorted(local.glob("artifacts/**/*.pt")) or sorted(local.rglob("*.pt"))
    if len(found) != 1:
        raise ValueError(
            f"{uri}: expected exactly one .pt checkpoint under artifacts/, found "
            f"{[str(p.relative_to(local)) for p in found] or 'none'}"
        )
    return found[0]


def annotate(image: np.ndarray, records: Sequence[FaceRecord]) -> np.ndarray:
    """A copy of an RGB image with each face's box and ``expression probability`` drawn."""
    out = np.ascontiguousarray(image.copy())
    thickness = max(1, round(max(out.shape[:2]) / 400))
    scale = max(0.4, max(out.shape[:2]) / 1000)
    for record in records:
        if record.status != "ok" or record.box is None:
            continue
        x, y, w, h = record.box
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), (0, 255, 0), thickness)
        text = f"{record.expression} {record.probability:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(0, y - th - base - 2)
        cv2.rectangle(out, (x, top), (x + tw + 2, top + th + base + 2), (0, 255, 0), -1)
        cv2.putText(
            out,
            text,
            (x + 1, top + th + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (0, 0, 0),
            thickness,
            cv2.LINE_AA,
        )
    return out
