"""What :func:`psr.engine.fit` writes: ``last.pt`` (the resumable state) and ``best.pt`` (the
inference checkpoint of the best epoch, with what ``psr.models.load_model`` needs besides it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from psr.data.torch_dataset import SplitLike

LAST = "last.pt"
BEST = "best.pt"


@dataclass(frozen=True)
class Outputs:
    last: Path
    best: Path
    model_info: dict[str, Any]  # config, class_names, image_size: psr.models.save_model's
    channels: int  # of the training images; 1 makes the Predictor convert photos to gray

    @classmethod
    def create(
        cls,
        out_dir: Path,
        model: nn.Module,
        train_split: SplitLike,
        class_names: Sequence[str] | None,
        model_config: Mapping[str, Any] | None,
        image_size: int | None,
        channels: int | None,
    ) -> Outputs:
        """The paths in ``out_dir``; unset arguments come from the split and the model."""
        config = model_config if model_config is not None else _model_config(model)
        model_info = {
            "config": dict(config),
            "class_names": tuple(class_names or train_split.class_names),
            "image_size": int(image_size or _model_image_size(model)),
        }
        channels = int(channels or _image_channels(train_split))
        return cls(out_dir / LAST, out_dir / BEST, model_info, channels)

    def save_best(
        self, model: nn.Module, metrics: dict[str, float], augment: dict[str, Any]
    ) -> None:
        from psr.models import save_model

        extra = {
            "epoch": int(metrics["epoch"]),
            "phase": int(metrics["phase"]),
            "valid_acc": float(metrics["valid_acc"]),
            "valid_loss": float(metrics["valid_loss"]),
            "channels": self.channels,
            "augment": augment,  # test-time augmentation reuses the training recipe's views
        }
        save_model(self.best, model, **self.model_info, extra=extra)


def _model_config(model: nn.Module) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError("pass model_config= (the model has no .config to store in best.pt)")
    return config.model_dump() if hasattr(config, "model_dump") else dict(config)


def _model_image_size(model: nn.Module) -> int:
    size = getattr(model, "image_size", None)
    if size is None:
        raise ValueError("pass image_size= (the model has no .image_size)")
    return int(size)


def _image_channels(split: SplitLike) -> int:
    """Channels of the split's uint8 images ``[N, H, W, C]`` (``[N, H, W]``: gray)."""
    images = split.images
    channels = images.shape[-1] if images.ndim == 4 else 1
    if images.ndim not in (3, 4) or channels not in (1, 3):
        raise ValueError(f"training images must be [N, H, W, 1 or 3], got {list(images.shape)}")
    return int(channels)
