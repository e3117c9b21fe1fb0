"""ONNX export of the fused model: parity with PyTorch, dynamic batch, metadata, the CLI."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from psr.cli import main
from psr.export import INPUT_NAME, OUTPUT_NAME, export_onnx
from psr.models import FusedModel, create_model, save_model

SMALL = {"width": 0.125, "sr_features": 8, "sr_res_blocks": 1}


def _model(name: str, size: int = 64):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, image_size=size, **SMALL)
    model.train()(torch.randn(4, 3, size, size))  # non-default BatchNorm statistics
    if name not in ("vgg16", "small_cnn"):
        with torch.no_grad():  # a non-identity STN, so the exported sampling is exercised
            model.stn.regressor[-1].bias.copy_(torch.tensor([0.9, 0.1, 0.05, -0.1, 0.95, 0.0]))
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize(("name", "size"), [("psr", 100), ("vgg16", 48), ("small_cnn", 64)])
def test_onnx_matches_pytorch_for_any_batch(tmp_path, name: str, size: int) -> None:
    model = _model(name, size)
    path = export_onnx(model, tmp_path / "model.onnx", class_names=list("abcdefg"))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == INPUT_NAME
    for batch in (1, 5):
        x = torch.randn(batch, 3, size, size)
        with torch.no_grad():
            expected = FusedModel(model)(x).numpy()
        (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})
        assert got.shape == (batch, 7)
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(got.sum(1), 1, atol=1e-5)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["class_names"]) == list("abcdefg")
    assert meta["image_size"] == str(size)
    assert model.training is False


def _checkpoint(tmp_path):
    model = _model("psr_interp")  # bicubic upsampling instead of EDSR
    return save_model(
        tmp_path / "best.pt",
        model,
        config=model.config.model_dump(),
        class_names=list("abcdefg"),
        image_size=64,
    )


@pytest.mark.slow
def test_export_command(tmp_path, capsys) -> None:
    checkpoint = _checkpoint(tmp_path)
    out = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "--onnx", str(out)]) == 0
    assert "max |difference|" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert main(["export", "--checkpoint", str(tmp_path / "nope.pt"), "--onnx", str(out)]) == 2
    assert f"checkpoint not found: {tmp_path / 'nope.pt'}" in capsys.readouterr().err


@pytest.mark.slow
def test_export_int8_command_calibrates_on_the_train_split(tmp_path, capsys, prepared) -> None:
    checkpoint = _checkpoint(tmp_path)
    out = tmp_path / "int8.onnx"
    command = ["export", "--checkpoint", str(checkpoint), "--onnx", str(out)]
    calibrate = ["--calibrate-on", str(prepared), "--calibration-images", "16"]
    assert main([*command, "--int8", *calibrate]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out} (int8, 16 crops)" in printed and "tolerance 0.1" in printed
    graph = onnx.load(str(out))
    assert "QuantizeLinear" in {node.op_type for node in graph.graph.node}
    assert json.loads({p.key: p.value for p in graph.metadata_props}["class_names"]) == list(
        "abcdefg"
    )
    assert main([*command, "--int8"]) == 2
    assert "--calibrate-on goes with --int8, which needs it" in capsys.readouterr().err
    assert main([*command, *calibrate]) == 2
    assert "--calibrate-on goes with --int8" in capsys.readouterr().err
