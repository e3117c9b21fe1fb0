"""The registered model: an MLflow pyfunc over a PSR inference checkpoint.

Logged as *model from code*: MLflow stores this file with the model and runs it on load, so no
pickled object is involved, and the checkpoint (a state dict) is read with ``weights_only=True``
by ``psr.inference.Predictor``. Input: uint8 images ``[N, H, W, C]`` (C = 1 gray, 3 RGB or
4 RGBA; any size, each image one pre-cropped face). Output: a DataFrame of class probabilities
with one column per class name, in the model's class order.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd

#: Key of the checkpoint in the logged model's artifacts.
CHECKPOINT_ARTIFACT = "checkpoint"


def as_images(model_input: Any) -> np.ndarray:
    """The scoring input as uint8 ``[N, H, W, C]``; a clear error for anything else."""
    if isinstance(model_input, pd.DataFrame | dict):
        raise ValueError("expected a tensor input: {'inputs': [N x H x W x C uint8 values]}")
    images = np.asarray(model_input)
    if images.ndim == 3:  # [N, H, W] gray
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or 0 in images.shape[1:3]:
        raise ValueError(f"expected images [N, H, W, C] with C in (1, 3, 4), got {images.shape}")
    if images.dtype != np.uint8:
        if images.size and (images.min() < 0 or images.max() > 255):
            raise ValueError("pixel values must lie in 0..255")
        images = images.astype(np.uint8)
    return images


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
        images = as_images(model_input)
        probs = self.predictor.probabilities(list(images))  # [N, K]
        return pd.DataFrame(probs.astype(np.float64), columns=list(self.predictor.class_names))


mlflow.models.set_model(PSRModel())
