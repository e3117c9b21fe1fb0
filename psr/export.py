"""ONNX export of the fused PSR model: normalised ``[B, 3, S, S]`` -> probabilities ``[B, K]``.

Uses ``torch.onnx.export(dynamo=True)`` (the torch.export-based exporter; the TorchScript one is
deprecated) with a dynamic batch dimension. Class names, image size and the normalisation the
input expects are stored as ONNX metadata, so a server needs only the ``.onnx`` file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from psr.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from psr.fileio import atomic_path
from psr.models import FusedModel, PSRNet, load_model
from psr.models.fusion import fuse_conv_bn
from psr.runtime_onnx import INPUT_NAME, OUTPUT_NAME

OPSET = 18


def _onnx_program(model: PSRNet, image_size: int) -> onnx.ModelProto:
    fused = FusedModel(model).eval()
    example = torch.randn(2, 3, image_size, image_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.onnx.export(
        fused,
        (example,),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes={"x": {0: batch}},
        opset_version=OPSET,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    return program.model_proto


def onnx_model(
    model: PSRNet,
    class_names: Sequence[str] | None = None,
    *,
    fold_batch_norm: bool = True,
    calibration: Iterable[np.ndarray] | None = None,
) -> onnx.ModelProto:
    """The ONNX graph of ``model`` (fused probabilities) with its metadata, in memory.

    ``fold_batch_norm`` exports an eval copy whose BatchNorms are folded into the convolutions
    before them (:func:`psr.models.fusion.fuse_conv_bn`); the function is the same. With
    ``calibration`` (normalised ``[B, 3, S, S]`` batches of training faces) the graph is the
    int8 one calibrated on them (:func:`psr.quantize.quantize_int8`).
    Class names default to ``class_0..class_{K-1}``. ``model`` is left in its mode."""
    names = class_names or [f"class_{i}" for i in range(model.num_classes)]
    was_training = model.training
    try:
        source = fuse_conv_bn(model) if fold_batch_norm else model.eval()
        proto = _onnx_program(source, model.image_size)
    finally:
        model.train(was_training)
    metadata = {
        "class_names": json.dumps(list(names)),
        "image_size": str(model.image_size),
        "mean": json.dumps(IMAGENET_MEAN),
        "std": json.dumps(IMAGENET_STD),
        "input": f"float32 [B, 3, {model.image_size}, {model.image_size}], RGB, normalised",
        "output": f"float32 [B, {model.num_classes}], mean of per-branch softmax",
    }
    onnx.helper.set_model_props(proto, metadata)
    if calibration is not None:
        from psr.quantize import quantize_int8

        proto = quantize_int8(proto, calibration)
    return proto


def export_onnx(
    checkpoint_or_model: str | Path | nn.Module,
    out_path: str | Path,
    *,
    class_names: Sequence[str] | None = None,
    calibration: Iterable[np.ndarray] | None = None,
) -> Path:
    """Export a checkpoint (from ``save_model``) or a model to ``out_path`` atomically; int8
    with ``calibration`` (:func:`onnx_model`).

    For a bare model, class names default to ``class_0..class_{K-1}``.
    """
    if isinstance(checkpoint_or_model, nn.Module):
        model, names = checkpoint_or_model, class_names
    else:
        model, info = load_model(checkpoint_or_model)
        names = class_names or info["class_names"]
    proto = onnx_model(model, names, calibration=calibration)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        onnx.save_model(proto, tmp)
    return out_path


def max_abs_difference(
    model: PSRNet,
    onnx_path: str | Path,
    batch: int = 3,
    seed: int = 0,
    inputs: Iterable[np.ndarray] | None = None,
) -> float:
    """Largest |PyTorch - onnxruntime| probability on ``inputs`` (normalised batches), by default
    a random normalised batch of ``batch`` images."""
    from psr.runtime_onnx import create_session

    if inputs is None:
        generator = torch.Generator().manual_seed(seed)
        size = model.image_size
        inputs = [torch.randn(batch, 3, size, size, generator=generator).numpy()]
    session = create_session(onnx_path)
    was_training = model.training
    fused = FusedModel(model.eval())
    largest = 0.0
    try:
        for x in inputs:
            with torch.no_grad():
                expected = fused(torch.from_numpy(np.asarray(x))).numpy()
            (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x)})
            largest = max(largest, float(np.abs(got - expected).max()))
    finally:
        model.train(was_training)
    return largest
