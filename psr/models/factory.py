"""One constructor for the PSR family, in the manner of ``timm.create_model``."""

from __future__ import annotations

from typing import Any

from psr.models.config import FAMILY, ModelConfig
from psr.models.psr import PSRNet
from psr.models.small_cnn import SmallCNN
from psr.models.weights import load_backbone_weights, load_sr_weights


def list_models() -> dict[str, str]:
    """Family member names and what each one is."""
    return {name: member.description for name, member in FAMILY.items()}


def build_model(cfg: ModelConfig) -> PSRNet | SmallCNN:
    """The network described by a validated ``cfg``, with the weights it names loaded."""
    if cfg.name == "small_cnn":
        small = SmallCNN(cfg.num_classes, cfg.image_size, cfg.width)
        small.config = cfg
        return small
    model = PSRNet(
        num_classes=cfg.num_classes,
        image_size=cfg.image_size,
        multiples=cfg.multiples,
        stn=cfg.stn,
        sr=cfg.sr,
        sr_features=cfg.sr_features,
        sr_res_blocks=cfg.sr_res_blocks,
        sr_res_scale=cfg.sr_res_scale,
        sep_pos=cfg.sep_pos,
        width=cfg.width,
        imagenet=cfg.pretrained == "imagenet",
        head_dropout=cfg.head_dropout,
    )
    if cfg.pretrained not in ("imagenet", "none"):
        load_backbone_weights(
            model,
            cfg.pretrained,
            cfg.sep_pos,
            source_class_names=cfg.pretrained_class_names,
            class_names=cfg.class_names,
        )
    sr_files = {2: cfg.sr_weights} if isinstance(cfg.sr_weights, str) else cfg.sr_weights or {}
    for scale, path in sr_files.items():
        load_sr_weights(model, path, scale)
    model.config = cfg
    return model


def create_model(name: str = "psr", **cfg: Any) -> PSRNet | SmallCNN:
    """Build family member ``name`` (see :func:`list_models`) with ``ModelConfig`` fields ``cfg``.

    ``create_model("psr", num_classes=7, image_size=100)`` is the paper's RAF-DB network;
    ``create_model(**ModelConfig(...).model_dump())`` works too. Bad names or fields raise a
    ValueError (pydantic's ValidationError) that names the field and the valid choices.
    """
    return build_model(ModelConfig(name=name, **cfg))
