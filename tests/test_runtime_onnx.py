"""onnxruntime as the Predictor's runtime: the same predictions as PyTorch, batched or not."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from psr.export import onnx_model
from psr.inference import Predictor
from psr.models import FusedModel
from psr.runtime_onnx import OnnxClassifier, create_session

NAMES = ("neutral", "happiness", "surprise", "anger")
SIZE = 64


def _faces(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40 + 7 * i, 50, 3), dtype=np.uint8) for i in range(n)]


@pytest.fixture(scope="module")
def model(tiny_psr):
    with torch.no_grad():  # a non-identity STN, so the exported sampling is exercised
        tiny_psr.stn.regressor[-1].bias.copy_(torch.tensor([0.9, 0.1, 0.05, -0.1, 0.95, 0.0]))
    return tiny_psr


def test_batched_probabilities_equal_one_crop_at_a_time(model):
    faces = _faces(5)
    predictor = Predictor(model, NAMES, SIZE, batch_size=4)  # a full and a partial batch
    together = predictor.probabilities(faces)
    alone = np.concatenate([predictor.probabilities([f]) for f in faces])
    np.testing.assert_allclose(together, alone, atol=1e-5)


@pytest.mark.slow
def test_onnx_runtime_predicts_what_pytorch_predicts(model):
    faces = _faces(5)
    eager = Predictor(model, NAMES, SIZE, batch_size=3)
    onnx_predictor = Predictor(model, NAMES, SIZE, batch_size=3, runtime="onnx", threads=1)
    assert model.training is False and onnx_predictor.model is model
    expected = eager.probabilities(faces)
    got = onnx_predictor.probabilities(faces)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    one = onnx_predictor.probabilities(faces[:1])  # the dynamic batch: 1 as well as 3
    np.testing.assert_allclose(one, expected[:1], atol=1e-5)
    records = onnx_predictor.predict_arrays(faces)
    assert [r.expression for r in records] == [NAMES[i] for i in expected.argmax(1)]


@pytest.mark.slow
def test_sessions_from_bytes_and_files_at_every_optimisation_level(model, tmp_path):
    proto = onnx_model(model, list(NAMES), fold_batch_norm=False)
    path = tmp_path / "model.onnx"
    onnx.save_model(proto, path)
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = FusedModel(model)(x).numpy()
    for source, level in [(proto, "disable"), (proto.SerializeToString(), "basic"), (path, "all")]:
        got = OnnxClassifier(create_session(source, threads=1, optimization=level))(x.numpy())
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_bad_runtime_settings_are_named(model, tmp_path):
    with pytest.raises(ValueError, match="runtime must be one of"):
        Predictor(model, NAMES, SIZE, runtime="tensorrt")
    with pytest.raises(ValueError, match="runs on the CPU"):
        Predictor(model, NAMES, SIZE, runtime="onnx", device="meta")
    with pytest.raises(FileNotFoundError, match="ONNX model not found"):
        create_session(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="optimization must be one of"):
        create_session(tmp_path / "missing.onnx", optimization="max")
    with pytest.raises(ValueError, match="threads must be >= 0"):
        create_session(tmp_path / "missing.onnx", threads=-1)
