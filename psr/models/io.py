"""Inference checkpoints: config + class names + image size + state dict, nothing executable.

The file loads with ``torch.load(weights_only=True)``: it holds only tensors and primitive
containers, and :func:`load_model` rebuilds the network from its stored config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from psr.fileio import atomic_write
from psr.models.config import ModelConfig
from psr.models.factory import build_model
from psr.models.psr import PSRNet
from psr.models.weights import read_state_dict

FORMAT = "psr-model/1"
_PRIMITIVES = (str, int, float, bool, type(None), torch.Tensor)


def _check_primitive(value: Any, where: str) -> None:
    """TypeError unless ``value`` is made of primitives and lists/tuples/dicts of them."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_primitive(k, where)
            _check_primitive(v, f"{where}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_primitive(v, f"{where}[{i}]")
    elif not isinstance(value, _PRIMITIVES):
        raise TypeError(f"{where} holds a {type(value).__name__}; checkpoints take primitives only")


def save_model(
    path: str | Path,
    model: PSRNet,
    *,
    config: Mapping[str, Any],
    class_names: Sequence[str],
    image_size: int,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write an inference checkpoint to ``path`` atomically (temp file, then rename)."""
    if image_size != model.image_size:
        raise ValueError(f"image_size={image_size} but the model takes {model.image_size} px")
    if len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names for a {model.num_classes}-class model")
    checkpoint = {
        "format": FORMAT,
        "config": ModelConfig(**config).model_dump(),
        "class_names": list(class_names),
        "image_size": int(image_size),
        "extra": dict(extra or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    _check_primitive(checkpoint, "checkpoint")
    return atomic_write(path, lambda f: torch.save(checkpoint, f))


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[PSRNet, dict]:
    """Rebuild the model saved by :func:`save_model`; returns ``(model in eval mode, info)``.

    ``info`` has ``config``, ``class_names``, ``image_size`` and ``extra``. The stored weights
    replace any pre-trained ones, so the config's weight files are not needed (nor read).
    """
    checkpoint = read_state_dict(path, "model checkpoint")
    if checkpoint.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a PSR model checkpoint (format {checkpoint.get('format')!r})"
        )
    config = dict(checkpoint["config"])
    model = build_model(ModelConfig(**{**config, "pretrained": "none", "sr_weights": None}))
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not match the stored config: {err}") from err
    model.to(map_location).eval()
    info = {k: checkpoint[k] for k in ("config", "class_names", "image_size", "extra")}
    return model, info
