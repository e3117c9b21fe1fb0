"""The registered model: an MLflow pyfunc over a PSR inference checkpoint.

Logged as *model from code*: MLflow stores this file with the model and runs it on load, so no
pickled object is involved, and the checkpoint (a state dict) is read with ``weights_only=True``
by ``psr.inference.Predictor``. Input: images ``[N, H, W, C]`` of integer pixel values 0..255
(C = 1 gray, 3 RGB or 4 RGBA; each image one pre-cropped face, at most ``MAX_PIXELS`` pixels
in all). Output: a DataFrame of class probabilities with one column per class name, in the
model's class order.

The logged signature declares the outputs only: MLflow casts a request to a declared input
type before the model sees it (a cast to uint8 turns floats in 0..1 into a black image, and
any other type refuses the uint8 arrays Python callers pass), so :func:`as_images` checks the
input instead. Every bad input is an ``INVALID_PARAMETER_VALUE`` error (HTTP 400) that says
what was expected, never a traceback.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd

#: Key of the checkpoint in the logged model's artifacts.
CHECKPOINT_ARTIFACT = "checkpoint"
#: Pixels one request may hold (all images together): 64 crops of 512 x 512.
MAX_PIXELS = 64 * 512 * 512
EXPECTED = "expected {'inputs': [N x H x W x C]} of integer pixel values 0..255, C in (1, 3, 4)"


class BadInput(ValueError):
    """A request the model cannot score; the message says what was expected."""


def as_images(model_input: Any) -> np.ndarray:
    """The scoring input as uint8 ``[N, H, W, C]``; :class:`BadInput` for anything else."""
    if isinstance(model_input, pd.DataFrame | dict):
        raise BadInput(f"got a table; {EXPECTED}")
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


class PSRModel(mlflow.pyfunc.PythonModel):
    """Faces in, per-class probabilities out (mean of the pyramid branches' softmax)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from psr.inference import Predictor

        self.predictor = Predictor.from_checkpoint(
            context.artifacts[CHECKPOINT_ARTIFACT], detect=False
        )

    # No type hints here: MLflow would derive (and enforce) a schema from them; the logged
    # signature (uint8 tensor in, one probability column per class out) is the contract.
    def predict(self, context, model_input, params=None):
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        try:
            images = as_images(model_input)
        except BadInput as err:  # a 400 with the reason, not a 500 with a traceback
            raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from None
        probs = self.predictor.probabilities(list(images))  # [N, K]
        return pd.DataFrame(probs.astype(np.float64), columns=list(self.predictor.class_names))


mlflow.models.set_model(PSRModel())
