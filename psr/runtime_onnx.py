"""onnxruntime inference of the exported PSR model: the fastest CPU runtime of the project.

:func:`create_session` is the one place a session is configured (all graph optimisations,
intra-op threads, sequential execution); :class:`OnnxClassifier` runs normalised batches through
it. ``bench/inference.py`` compares it with PyTorch eager. Nothing here imports torch at module
level, so the served ONNX model (``pipeline/onnx_pyfunc.py``) runs without it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import onnxruntime as ort

if TYPE_CHECKING:
    import onnx

    from psr.models import PSRNet

#: The exported graph's input (normalised images) and output (fused probabilities).
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"

Optimization = Literal["disable", "basic", "extended", "all"]
OPTIMIZATION_LEVELS: dict[str, ort.GraphOptimizationLevel] = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def create_session(
    model: str | Path | bytes | onnx.ModelProto,
    *,
    threads: int = 0,
    optimization: Optimization = "all",
) -> ort.InferenceSession:
    """A CPU session for an ONNX file, its bytes or an in-memory model.

    ``threads`` sets the intra-op thread pool (0: onnxruntime's default, one per core); the
    graph runs sequentially, so no inter-op pool competes for the same cores. Every session of
    the project (the classifier, MTCNN's three nets) is made here."""
    if optimization not in OPTIMIZATION_LEVELS:
        raise ValueError(
            f"optimization must be one of {list(OPTIMIZATION_LEVELS)}, got {optimization!r}"
        )
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    options = ort.SessionOptions()
    options.graph_optimization_level = OPTIMIZATION_LEVELS[optimization]
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle threads sleep instead of spinning: spinning ones took the cores from whatever ran
    # next (torch's model, another session): bench/inference.py's matmul probe measured 53-60
    # GFLOP/s with spinning, 120-135 without (BENCHMARKS.md, Inference).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if hasattr(model, "SerializeToString"):  # an onnx.ModelProto (onnx itself not imported)
        model = model.SerializeToString()
    elif not isinstance(model, bytes):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        model = str(path)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class OnnxClassifier:
    """Normalised images ``[B, 3, S, S]`` float32 -> fused probabilities ``[B, K]``."""

    def __init__(self, session: ort.InferenceSession):
        self.session = session

    @classmethod
    def from_model(
        cls,
        model: PSRNet,
        *,
        threads: int = 0,
        optimization: Optimization = "all",
        fold_batch_norm: bool = True,
        calibration: Iterable[np.ndarray] | None = None,
    ) -> OnnxClassifier:
        """Export ``model`` in memory (:func:`psr.export.onnx_model`) and open a session; with
        ``calibration`` (normalised batches), the int8 graph calibrated on them."""
        from psr.export import onnx_model

        proto = onnx_model(model, fold_batch_norm=fold_batch_norm, calibration=calibration)
        return cls(create_session(proto, threads=threads, optimization=optimization))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.float32)
        (probabilities,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: images})
        return probabilities
