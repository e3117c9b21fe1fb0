"""The registered model's ONNX twin: the same requests and answers as ``pipeline/pyfunc.py``,
computed by onnxruntime, so the champion serves without torch.

Logged as *model from code* beside the PyTorch pyfunc (``pipeline/stages/register.py``), with
two artifacts: ``model.onnx`` (``psr.export``: normalised ``[B, 3, S, S]`` -> probabilities) and
``preprocessing.json`` (class names, image size, normalisation, gray conversion). The
preprocessing repeats ``psr.data.transforms.eval_transform`` in OpenCV and NumPy (bilinear resize
to S, ImageNet normalisation); the register stage checks that both models agree. Neither loading
nor predicting imports torch.
"""

from __future__ import annotations

import json

import mlflow
import numpy as np

ONNX_ARTIFACT = "onnx"
PREPROCESSING_ARTIFACT = "preprocessing"
#: On a registered version: the URI of its ONNX twin (``models:/<logged model id>``).
TAG_ONNX = "psr.onnx_model_uri"


class Preprocess:
    """uint8 face crops (any size, RGB/gray/RGBA) -> float32 ``[N, 3, S, S]``, normalised."""

    def __init__(self, image_size: int, mean, std, grayscale: bool = False):
        self.size = int(image_size)
        self.scale = (1 / (255 * np.asarray(std, np.float32))).astype(np.float32)
        self.offset = (np.asarray(mean, np.float32) * 255).astype(np.float32)
        self.grayscale = grayscale

    def one(self, crop: np.ndarray, index: int) -> np.ndarray:
        import cv2

        from psr.detect import to_rgb

        rgb = to_rgb(crop, name=f"image {index}")
        if self.grayscale:
            rgb = np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)
        resized = cv2.resize(rgb, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        return ((resized.astype(np.float32) - self.offset) * self.scale).transpose(2, 0, 1)

    def __call__(self, crops) -> np.ndarray:
        return np.stack([self.one(c, i) for i, c in enumerate(crops)])


class ONNXModel(mlflow.pyfunc.PythonModel):
    """Face crops or photos in, per-class probabilities out, on onnxruntime."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from psr.detect import create_detector
        from psr.runtime_onnx import OnnxClassifier, create_session

        with open(context.artifacts[PREPROCESSING_ARTIFACT]) as f:
            config = json.load(f)
        self.class_names = tuple(config["class_names"])
        self.preprocess = Preprocess(
            config["image_size"], config["mean"], config["std"], config.get("grayscale", False)
        )
        self.classify = OnnxClassifier(create_session(context.artifacts[ONNX_ARTIFACT]))
        self.batch_size = int(config.get("batch_size", 32))
        self.detector = create_detector("auto")

    def probabilities(self, crops) -> np.ndarray:
        rows = [
            self.classify(self.preprocess(crops[i : i + self.batch_size]))
            for i in range(0, len(crops), self.batch_size)
        ]
        return np.concatenate(rows) if rows else np.zeros((0, len(self.class_names)), np.float32)

    # No type hints (see pipeline/pyfunc.py): the request is checked by psr.serving.
    def predict(self, context, model_input, params=None):
        from psr.serving import score

        size = self.preprocess.size
        return score(model_input, self.probabilities, self.class_names, self.detector, size)


mlflow.models.set_model(ONNXModel())
