"""The request contract of the served models (``pipeline/pyfunc.py``, ``pipeline/onnx_pyfunc.py``).

Two kinds of request, told apart by their shape:

- **face crops**: a tensor ``[N, H, W, C]`` of integer pixel values 0..255 (``{"inputs": ...}``),
  answered with one row of class probabilities per crop (:func:`as_images`);
- **photos**: a table with an ``image`` column of base64-encoded JPEG/PNG files
  (``{"dataframe_records": [{"image": "<base64>"}, ...]}``), answered per photo with its faces:
  box, landmarks, expression and probabilities (:func:`decode_photos`, :func:`describe_faces`).

Every bad request is a :class:`BadInput` whose message names the row and what was wrong; the
pyfuncs turn it into MLflow's ``INVALID_PARAMETER_VALUE`` (HTTP 400). Nothing here imports torch:
the ONNX model serves without it.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: Pixels one face-crop request may hold (all images together): 64 crops of 512 x 512.
MAX_PIXELS = 64 * 512 * 512
EXPECTED = "expected {'inputs': [N x H x W x C]} of integer pixel values 0..255, C in (1, 3, 4)"
#: The column of a photo request: one base64-encoded image file per row.
PHOTO_COLUMN = "image"
#: Decoded pixels one photo request may hold (all photos together), checked from the headers
#: before anything is decoded: a small PNG can decode to GBs.
MAX_PHOTO_PIXELS = 64_000_000
EXPECTED_PHOTOS = (
    f"expected {{'dataframe_records': [{{'{PHOTO_COLUMN}': '<base64 JPEG or PNG>'}}, ...]}}"
)


#: Keys of the logged models' MLmodel ``metadata``: the prepared dataset's name, and whether it
#: was the project's synthetic faces (``psr predict`` says so: such a model means little on
#: real photos).
DATASET_METADATA, SYNTHETIC_METADATA = "psr_dataset", "psr_synthetic_training_data"


class BadInput(ValueError):
    """A request the model cannot score; the message says what was expected."""


def is_photo_request(model_input: Any) -> bool:
    """Whether the input is a table (or column dict): photos, not face-crop tensors."""
    import pandas as pd

    return isinstance(model_input, pd.DataFrame | dict)


def as_images(model_input: Any) -> np.ndarray:
    """The scoring input as uint8 ``[N, H, W, C]``; :class:`BadInput` for anything else."""
    try:
        images = np.asarray(model_input)
    except ValueError:  # ragged nested lists
        raise BadInput(
            f"images of different sizes; send one request per size, {EXPECTED}"
        ) from None
    if images.ndim == 3:  # [N, H, W] gray
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or 0 in images.shape:
        raise BadInput(f"got shape {list(images.shape)}; {EXPECTED}")
    if images.shape[0] * images.shape[1] * images.shape[2] > MAX_PIXELS:
        raise BadInput(
            f"{images.shape[0]} images of {images.shape[2]}x{images.shape[1]} exceed "
            f"{MAX_PIXELS} pixels per request: send face crops, or fewer per request"
        )
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind not in "biuf":
        raise BadInput(f"got {images.dtype} values; {EXPECTED}")
    if images.min() < 0 or images.max() > 255:
        raise BadInput(f"pixel values span {images.min()}..{images.max()}; {EXPECTED}")
    if images.dtype.kind == "f" and not np.array_equal(images, np.round(images)):
        hint = " (0..1 floats: multiply by 255)" if images.max() <= 1 else ""
        raise BadInput(f"pixel values are not integers{hint}; {EXPECTED}")
    return images.astype(np.uint8)


def decode_photos(model_input: Any) -> list[np.ndarray]:
    """The photos of a photo request, RGB uint8 ``[H, W, 3]`` each, in row order."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if PHOTO_COLUMN not in model_input.columns:
            columns = [str(c) for c in model_input.columns]
            raise BadInput(f"no {PHOTO_COLUMN!r} column (got {columns}); {EXPECTED_PHOTOS}")
        values = list(model_input[PHOTO_COLUMN])
    else:
        if PHOTO_COLUMN not in model_input:
            raise BadInput(
                f"no {PHOTO_COLUMN!r} field (got {sorted(model_input)}); {EXPECTED_PHOTOS}"
            )
        values = list(np.atleast_1d(np.asarray(model_input[PHOTO_COLUMN], dtype=object)))
    if not values:
        raise BadInput(f"no photos; {EXPECTED_PHOTOS}")
    files = [_file_bytes(value, row) for row, value in enumerate(values)]
    sizes = [_header_size(data, row) for row, data in enumerate(files)]
    total = sum(w * h for w, h in sizes)
    if total > MAX_PHOTO_PIXELS:
        raise BadInput(
            f"{len(files)} photos of {total / 1e6:.3g} megapixels in all exceed the "
            f"{MAX_PHOTO_PIXELS / 1e6:.3g} megapixels of one request: send fewer or smaller photos"
        )
    return [_decode(data, row) for row, data in enumerate(files)]


def _file_bytes(value: Any, row: int) -> bytes:
    if not isinstance(value, str):
        raise BadInput(
            f"row {row}: {PHOTO_COLUMN!r} is a {type(value).__name__}, expected a base64 string"
        )
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(f"row {row}: {PHOTO_COLUMN!r} is not valid base64") from None
    if not data:
        raise BadInput(f"row {row}: {PHOTO_COLUMN!r} is empty")
    return data


def _header_size(data: bytes, row: int) -> tuple[int, int]:
    """(width, height) from the file header: Pillow reads only that."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return image.size
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError):
        raise BadInput(
            f"row {row}: {PHOTO_COLUMN!r} decodes to {len(data)} bytes that are not an image "
            "(expected a JPEG or PNG file)"
        ) from None


def _decode(data: bytes, row: int) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise BadInput(
            f"row {row}: {PHOTO_COLUMN!r} is not a readable image (truncated or corrupt)"
        )
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def score(model_input, classify, class_names, detector, image_size):
    """Answer a request with ``classify`` (face crops -> ``[N, K]`` probabilities): a DataFrame
    for face crops, a list of ``{"faces": [...]}`` for photos (faces aligned to ``image_size``
    when the detector gives landmarks, as ``psr predict`` does). Both pyfuncs predict with it."""
    import pandas as pd
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    try:
        if is_photo_request(model_input):
            photos = decode_photos(model_input)
            return describe_faces(photos, detector, classify, class_names, image_size)
        images = as_images(model_input)
    except BadInput as err:  # a 400 with the reason, not a 500 with a traceback
        raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from None
    probs = classify(list(images))  # [N, K]
    return pd.DataFrame(np.asarray(probs, dtype=np.float64), columns=list(class_names))


def describe_faces(
    photos: Sequence[np.ndarray],
    detector: Any,
    classify: Callable[[list[np.ndarray]], np.ndarray],
    class_names: Sequence[str],
    image_size: int,
) -> list[dict[str, Any]]:
    """Per photo ``{"faces": [{"box", "landmarks", "expression", "probabilities"}, ...]}``:
    ``box`` is ``[x, y, w, h]`` in the photo's pixels, ``landmarks`` the detector's points
    ``[[x, y], ...]`` (null when it gives none). All crops are classified in one call."""
    from psr.align import face_input

    found = [detector.detect(photo) for photo in photos]
    crops = [
        face_input(p, b, image_size) for p, boxes in zip(photos, found, strict=True) for b in boxes
    ]
    probs = iter(classify(crops) if crops else [])
    answers = []
    for boxes in found:
        faces = []
        for box in boxes:
            p = next(probs)
            landmarks = box.landmarks
            faces.append(
                {
                    "box": [int(v) for v in box.as_tuple()],
                    "landmarks": None
                    if landmarks is None
                    else [[float(x), float(y)] for x, y in landmarks],
                    "expression": class_names[int(np.argmax(p))],
                    "probabilities": {n: float(v) for n, v in zip(class_names, p, strict=True)},
                }
            )
        answers.append({"faces": faces})
    return answers
