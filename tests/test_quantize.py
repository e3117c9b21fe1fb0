"""int8 quantisation of the exported graph: close to float32 on the data it was calibrated for,
run through the Predictor, and calibration drawn from a prepared split."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import pytest
import torch
from torch import nn

from psr.export import onnx_model
from psr.inference import Predictor
from psr.quantize import calibration_crops, quantize_int8

NAMES = ("neutral", "happiness", "surprise", "anger")
SIZE = 64


def _faces(n: int, seed: int) -> list[np.ndarray]:
    """Smooth random crops of one kind, so a calibration draw and a test draw come from the same
    distribution, and different enough that the model tells them apart."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, 4, 4, 3)).astype(np.float32)
    return [cv2.resize(c, (56, 56), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)
            for c in coarse]  # fmt: skip


@pytest.fixture(scope="module")
def model(tiny_psr):
    last = [m for m in tiny_psr.modules() if isinstance(m, nn.Linear)][-1]
    with torch.no_grad():  # outputs that differ from face to face, not all near uniform
        last.weight.mul_(30)
    return tiny_psr


@pytest.mark.slow
def test_the_int8_predictor_predicts_what_float32_predicts(model):
    calibration, faces = _faces(32, seed=1), _faces(24, seed=2)
    exact = Predictor(model, NAMES, SIZE).probabilities(faces)  # PyTorch: float32 ONNX's match
    int8 = Predictor(
        model, NAMES, SIZE, runtime="onnx-int8", threads=1, calibration=calibration
    ).probabilities(faces)
    np.testing.assert_allclose(int8.sum(axis=1), 1, atol=1e-3)
    # int8 moves a face's probabilities far less than another face does
    between_faces = np.abs(exact - exact[::-1]).mean()
    assert np.abs(int8 - exact).mean() < 0.25 * between_faces
    assert np.abs(int8 - exact).max() < 0.05


@pytest.mark.slow
def test_the_quantised_graph_is_int8_and_keeps_its_metadata(model):
    proto = onnx_model(model, list(NAMES))
    batches = [np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE), dtype=np.float32)]
    quantized = quantize_int8(proto, batches)
    ops = {node.op_type for node in quantized.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    int8 = [t for t in quantized.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert len(int8) >= len(convs)  # every convolution's weights
    assert {p.key: p.value for p in quantized.metadata_props} == {
        p.key: p.value for p in proto.metadata_props
    }


def test_calibration_settings_are_checked(model):
    with pytest.raises(ValueError, match="go with runtime 'onnx-int8'"):
        Predictor(model, NAMES, SIZE, runtime="onnx-int8")
    with pytest.raises(ValueError, match="go with runtime 'onnx-int8'"):
        Predictor(model, NAMES, SIZE, runtime="onnx", calibration=_faces(2, seed=0))
    with pytest.raises(ValueError, match="runs on the CPU"):
        Predictor(model, NAMES, SIZE, runtime="onnx-int8", device="meta", calibration=[])
    with pytest.raises(ValueError, match="no calibration images"):
        quantize_int8(onnx.ModelProto(), [])  # checked before the graph is read


def test_calibration_crops_are_a_seeded_sample_of_the_train_split(prepared, tmp_path):
    from psr.data.prepared import load_split

    train = load_split(prepared, "train")
    crops = calibration_crops(prepared, 10, seed=3)
    assert crops.shape == (10, *train.images.shape[1:]) and crops.dtype == np.uint8
    rows = {bytes(c) for c in crops}
    assert len(rows) == 10 and rows <= {bytes(image) for image in train.images}
    np.testing.assert_array_equal(crops, calibration_crops(prepared, 10, seed=3))
    assert not np.array_equal(crops, calibration_crops(prepared, 10, seed=4))
    assert len(calibration_crops(prepared, 500)) == len(train)  # a small split: all of it
    with pytest.raises(ValueError, match="at least one image"):
        calibration_crops(prepared, 0)
    with pytest.raises(FileNotFoundError, match="not a prepared dataset"):
        calibration_crops(tmp_path, 5)
