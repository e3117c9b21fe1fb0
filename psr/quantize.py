"""Static int8 quantisation of the exported PSR graph, for onnxruntime on the CPU.

Weights are quantised per output channel to int8 and activations to uint8, with ranges read off
calibration images (onnxruntime's MinMax calibration, QDQ format: onnxruntime fuses each
Dequantize-op-Quantize triple into an int8 kernel). ``bench/inference.py`` times it against the
float32 runtimes, ``bench/quantize.py`` measures how it changes a trained model's predictions
(BENCHMARKS.md, Inference). Calibrate on training images, never on a split that is reported.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # onnx loads in quantize_int8: the CLI imports CALIBRATION_IMAGES at start
    import onnx

#: Calibration crops by default, drawn from the training split.
CALIBRATION_IMAGES = 256

#: The operations computed in int8: the convolutions and linears, and what lies between them.
#: The STN's sampling, the softmax and the branch average stay float32, so probabilities keep
#: their precision (a uint8 softmax has steps of 1/255).
OP_TYPES = ("Conv", "Gemm", "MatMul", "Relu", "Add", "MaxPool")


def quantize_int8(proto: onnx.ModelProto, batches: Iterable[np.ndarray]) -> onnx.ModelProto:
    """The int8 QDQ graph of ``proto`` (an export of :func:`psr.export.onnx_model`), calibrated on
    ``batches`` of normalised images ``[B, 3, S, S]`` float32. Metadata is kept."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from psr.runtime_onnx import INPUT_NAME

    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        raise ValueError("no calibration images: the int8 model needs at least one batch")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = itertools.chain([first], batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            if batch is None:
                return None
            return {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}

    # quantize_static reads and writes files (an in-memory model loses its weights there)
    with tempfile.TemporaryDirectory(prefix="psr-int8-") as tmp:
        source, shaped, target = (Path(tmp, f"{n}.onnx") for n in ("float32", "shaped", "int8"))
        onnx.save_model(proto, source)
        # shapes inferred and the graph optimised first, as onnxruntime's quantiser asks
        quant_pre_process(source, shaped, skip_symbolic_shape=True)
        quantize_static(
            shaped,
            target,
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(OP_TYPES),
        )
        quantized = onnx.load_model(target)
    onnx.helper.set_model_props(quantized, {p.key: p.value for p in proto.metadata_props})
    return quantized


def calibration_crops(
    data_dir: str | Path, count: int = CALIBRATION_IMAGES, *, seed: int = 0
) -> np.ndarray:
    """``count`` face crops ``[n, H, W, C]`` uint8 drawn at random (``seed``) from the training
    split of the prepared dataset ``data_dir``: never from a split that is reported."""
    from psr.data.prepared import load_split

    if count < 1:
        raise ValueError(f"calibration needs at least one image, got count={count}")
    split = load_split(data_dir, "train")
    if len(split) == 0:
        raise ValueError(f"{data_dir}: the train split has no images to calibrate on")
    rows = np.sort(np.random.default_rng(seed).permutation(len(split))[:count])
    return np.asarray(split.images[rows])
