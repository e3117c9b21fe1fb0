"""The registered model: an MLflow pyfunc over a PSR inference checkpoint.

Logged as *model from code*: MLflow stores this file with the model and runs it on load, so no
pickled object is involved, and the checkpoint (a state dict) is read with ``weights_only=True``
by ``psr.inference.Predictor``. Two kinds of request (``psr/serving.py`` is the contract):

- face crops ``{"inputs": [N, H, W, C]}`` of integer pixel values 0..255 (C = 1 gray, 3 RGB or
  4 RGBA; at most ``MAX_PIXELS`` pixels in all): a DataFrame of class probabilities, one column
  per class name, in the model's class order;
- photos ``{"dataframe_records": [{"image": "<base64 JPEG/PNG>"}, ...]}``: per photo, the faces
  the default detector finds (MTCNN; Haar without its files), each with ``box`` [x, y, w, h],
  ``landmarks``, ``expression`` and ``probabilities``, aligned as ``psr predict`` aligns them.

The logged signature declares the crop outputs only: MLflow casts a request to a declared input
type before the model sees it (a cast to uint8 turns floats in 0..1 into a black image, and
any other type refuses the uint8 arrays Python callers pass), so ``psr.serving`` checks the
input instead. Every bad input is an ``INVALID_PARAMETER_VALUE`` error (HTTP 400) that says
what was wrong, never a traceback.
"""

from __future__ import annotations

import mlflow

from psr.serving import MAX_PIXELS, BadInput, as_images, score

__all__ = ["CHECKPOINT_ARTIFACT", "MAX_PIXELS", "BadInput", "PSRModel", "as_images", "score"]

#: Key of the checkpoint in the logged model's artifacts.
CHECKPOINT_ARTIFACT = "checkpoint"


class PSRModel(mlflow.pyfunc.PythonModel):
    """Faces in, per-class probabilities out (mean of the pyramid branches' softmax)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from psr.detect import create_detector
        from psr.inference import Predictor

        self.predictor = Predictor.from_checkpoint(
            context.artifacts[CHECKPOINT_ARTIFACT], detect=False
        )
        self.detector = create_detector("auto")

    # No type hints here: MLflow would derive (and enforce) a schema from them; the logged
    # signature (uint8 tensor in, one probability column per class out) is the contract.
    def predict(self, context, model_input, params=None):
        p = self.predictor
        return score(model_input, p.probabilities, p.class_names, self.detector, p.image_size)


mlflow.models.set_model(PSRModel())
