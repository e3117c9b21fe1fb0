"""Typed model configuration and the registry of the PSR family.

``ModelConfig`` holds every knob of :func:`psr.models.create_model`. Fields left ``None`` take the
default of the chosen family member (``FAMILY``); after validation they are filled in, so
``create_model(**cfg.model_dump())`` rebuilds exactly the same network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from psr.models.head import FASTAI_DROPOUT
from psr.models.pyramid import plan_pyramid
from psr.models.vgg import VGG_SPLIT_POINTS

#: The small CNN's head is one Linear layer: no dropout.
NO_DROPOUT: tuple[float, float] = (0.0, 0.0)

SRKind = Literal["edsr", "espcn", "bicubic", "bilinear"]


@dataclass(frozen=True)
class Member:
    """A named family member: what it is for and the defaults it gives ``ModelConfig``."""

    description: str
    defaults: dict[str, Any] = field(default_factory=dict)


#: The PSR family: the paper's network, its single-scale baseline and the paper's ablations.
FAMILY: dict[str, Member] = {
    "psr": Member(
        "PSR (paper): STN, pyramid [low, EDSR x2, full], shared VGG16-bn high part and head",
        {"multiples": [1, 2, 1], "stn": True, "sr": "edsr", "head_dropout": FASTAI_DROPOUT},
    ),
    "psr_nostn": Member(
        "PSR without the STN (ablation)",
        {"multiples": [1, 2, 1], "stn": False, "sr": "edsr", "head_dropout": FASTAI_DROPOUT},
    ),
    "psr_interp": Member(
        "PSR with bicubic interpolation instead of super resolution (ablation)",
        {"multiples": [1, 2, 1], "stn": True, "sr": "bicubic", "head_dropout": FASTAI_DROPOUT},
    ),
    "psr_espcn": Member(
        "PSR with the official SRNet3, an ESPCN-style SR network (earlier PSR versions)",
        {"multiples": [1, 2, 1], "stn": True, "sr": "espcn", "head_dropout": FASTAI_DROPOUT},
    ),
    "vgg16": Member(
        "single-scale VGG16-bn with the same head, no STN (baseline)",
        {"multiples": [1], "stn": False, "sr": "edsr", "head_dropout": FASTAI_DROPOUT},
    ),
    "small_cnn": Member(
        "plain small CNN: 4 stages of 2 convs, global pooling, linear (sanity baseline)",
        {"multiples": [1], "stn": False, "sr": "edsr", "head_dropout": NO_DROPOUT},
    ),
}


class ModelConfig(BaseModel):
    """Every knob of the PSR family; defaults are the paper's (see each field)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("psr", description=f"family member, one of {sorted(FAMILY)}")
    num_classes: int = Field(8, ge=2, description="K, number of output classes")
    image_size: int = Field(96, ge=1, description="S, side of the square input (96 FER+, 100 RAF)")
    multiples: list[int] | None = Field(
        None, description="pyramid branches (psr.models.pyramid); None: the member's, [1, 2, 1]"
    )
    stn: bool | None = Field(None, description="use the spatial transformer; None: the member's")
    sr: SRKind | None = Field(
        None, description="upsampler of the SR branches; None: the member's (edsr for psr)"
    )
    sr_features: int = Field(64, ge=2, description="channels of the learned SR net (EDSR: 64)")
    sr_res_blocks: int = Field(16, ge=0, description="EDSR residual blocks (baseline: 16)")
    sr_res_scale: float = Field(1.0, gt=0, description="EDSR residual scaling (baseline: 1)")
    sr_weights: str | dict[int, str] | None = Field(
        None,
        description="SR weights: a file for the x2 net (official EDSR or our SR pre-training), "
        "or {scale: file}",
    )
    sep_pos: int = Field(24, description=f"vgg16_bn split index, one of {VGG_SPLIT_POINTS}")
    width: float = Field(
        1.0,
        gt=0,
        le=4,
        description="ours, not the paper's: multiplies every VGG channel count (1.0 = paper)",
    )
    head_dropout: tuple[float, float] | None = Field(
        None,
        description="dropout before the head's two Linear layers; None: the member's (the "
        "paper's fastai .25 and .5; small_cnn has none)",
    )
    pretrained: str = Field(
        "none",
        description="backbone weights: 'imagenet' (torchvision, the paper's start), 'none', or a "
        "file (a state_dict or a PSR checkpoint, e.g. a FER+-trained VGG)",
    )
    pretrained_class_names: list[str] | None = Field(
        None,
        description="class order of the backbone file's output layer (read from a PSR checkpoint)",
    )
    class_names: list[str] | None = Field(
        None, description="this model's class order; with the above, reorders the output layer"
    )

    @field_validator("name")
    @classmethod
    def _known_name(cls, name: str) -> str:
        if name not in FAMILY:
            raise ValueError(f"unknown model {name!r}; valid: {sorted(FAMILY)}")
        return name

    @field_validator("head_dropout")
    @classmethod
    def _probabilities(cls, p: tuple[float, float] | None) -> tuple[float, float] | None:
        if p is not None and not all(0 <= x < 1 for x in p):
            raise ValueError(f"head_dropout must be two probabilities in [0, 1), got {list(p)}")
        return p

    @field_validator("sep_pos")
    @classmethod
    def _valid_split(cls, sep_pos: int) -> int:
        if sep_pos not in VGG_SPLIT_POINTS:
            raise ValueError(f"sep_pos={sep_pos} is not a vgg16_bn split point: {VGG_SPLIT_POINTS}")
        return sep_pos

    @model_validator(mode="after")
    def _resolve_and_check(self) -> ModelConfig:
        for key, value in FAMILY[self.name].defaults.items():
            if getattr(self, key) is None:
                setattr(self, key, list(value) if isinstance(value, list) else value)
        plan_pyramid(self.multiples, self.image_size)
        if self.name == "small_cnn":
            extras = {
                "multiples": self.multiples != [1],
                "stn": bool(self.stn),
                "pretrained": self.pretrained != "none",
                "sr_weights": bool(self.sr_weights),
                "head_dropout": tuple(self.head_dropout) != NO_DROPOUT,
            }
            if any(extras.values()):
                given = ", ".join(f"{k}={getattr(self, k)!r}" for k, on in extras.items() if on)
                raise ValueError(
                    "small_cnn is a plain single-scale CNN trained from scratch: multiples [1], "
                    "no STN, pretrained 'none', no sr_weights, head_dropout [0, 0] (its head is "
                    f"one linear layer) (got {given})"
                )
        if self.pretrained == "imagenet" and self.width != 1.0:
            raise ValueError(
                f"pretrained='imagenet' needs width=1.0 (got width={self.width}): "
                "ImageNet weights exist only for the full-width vgg16_bn"
            )
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} names but num_classes={self.num_classes}"
            )
        return self
