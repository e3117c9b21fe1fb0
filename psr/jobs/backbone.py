"""Job ``backbone``: the official RAF-DB starting point, a ``vgg16`` trained on FER+ at several
input sizes (the official ``config/ferplus-vgg16-3size.json``, whose ``final.w`` every RAF-DB
branch starts from).

One network, trained in steps: each step is a train-job run at its own input size that starts
from the step before's selected checkpoint (the first from ``model.pretrained``, ImageNet in the
recipe). The official steps: 48 px for 20 + 20 epochs at lr 5e-3, then 96, 144 and 48 px for 20
epochs each at lr 1e-3 (fastai's ``fit_one_cycle`` with AdamW), soft cross-entropy against the
FER+ vote proportions, batch 128. One deviation: the official first 20 epochs train the head
alone (fastai's frozen body); here every layer trains from the start.

A PSR model loads the result as ``model.pretrained``: every branch's low part, the shared high
part and the head, its output layer reordered to the target's classes by name
(:func:`psr.models.weights.load_backbone_weights`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from psr.engine import PhaseConfig, TrainConfig
from psr.engine.loop import Callback
from psr.models import ModelConfig

BEST = "best.pt"


class BackboneStep(BaseModel):
    """One step: the input size and the two one-cycle phases at that size."""

    model_config = ConfigDict(extra="forbid")

    image_size: int = Field(ge=32, description="input side S of this step")
    phase1: PhaseConfig
    phase2: PhaseConfig = Field(
        default_factory=lambda: PhaseConfig(epochs=0), description="none by default"
    )


def _official_steps() -> list[BackboneStep]:
    first = PhaseConfig(epochs=20, lrs=(5e-3,))
    later = PhaseConfig(epochs=20, lrs=(1e-3,))
    return [
        BackboneStep(image_size=48, phase1=first, phase2=first),
        *(BackboneStep(image_size=size, phase1=later) for size in (96, 144, 48)),
    ]


def _official_train() -> TrainConfig:
    return TrainConfig(batch_size=128, loss={"name": "soft_ce"})


class BackboneConfig(BaseModel):
    """The steps and the training settings they share (each step's phases replace ``train``'s)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        False, description="train the backbone (the official RAF-DB start); off: nothing runs"
    )
    steps: list[BackboneStep] = Field(
        default_factory=_official_steps,
        min_length=1,
        description="input size and phases of each step, each from the one before's checkpoint",
    )
    train: TrainConfig = Field(
        default_factory=_official_train,
        description="shared by every step (batch 128, soft cross-entropy against the votes)",
    )

    @field_validator("train")
    @classmethod
    def _no_tuning_fraction(cls, train: TrainConfig) -> TrainConfig:
        if train.data_fraction != 1.0:
            raise ValueError("the backbone trains on all of FER+ (data_fraction must be 1)")
        return train


@dataclass(frozen=True)
class BackboneResult:
    checkpoint: Path  # the last step's selected checkpoint: what model.pretrained loads
    steps: list[dict[str, Any]]  # per step: image size, best epoch and valid accuracy


def step_config(cfg: BackboneConfig, step: BackboneStep) -> TrainConfig:
    """The train config of ``step``: the shared settings with the step's phases."""
    changed = cfg.train.model_copy(update={"phase1": step.phase1, "phase2": step.phase2})
    return TrainConfig.model_validate(changed.model_dump())


def run(
    cfg: BackboneConfig,
    model: ModelConfig,
    data: str | Path,
    out: str | Path,
    *,
    callbacks_for_step: Callable[[int], Sequence[Callback]] | None = None,
) -> BackboneResult:
    """Train ``model`` (the ``vgg16`` member) on the prepared FER+ dataset ``data`` through every
    step; each step's run lives in ``out/step<i>-<size>px`` and resumes after an interruption.
    Writes ``out/best.pt``. ``callbacks_for_step(i)`` may return the train callbacks of step i."""
    from psr.jobs import train

    if model.name != "vgg16":
        raise ValueError(
            f"the backbone is the vgg16 member (the official vgg16_bn), not {model.name!r}"
        )
    out = Path(out)
    pretrained, summaries = model.pretrained, []
    for index, step in enumerate(cfg.steps, start=1):
        step_dir = out / f"step{index}-{step.image_size}px"
        step_model = model.model_copy(
            update={"image_size": step.image_size, "pretrained": pretrained}
        )
        step_model = ModelConfig.model_validate(step_model.model_dump())
        callbacks = callbacks_for_step(index) if callbacks_for_step else ()
        result = train.run(
            step_model, step_config(cfg, step), data, step_dir, callbacks=callbacks, resume="auto"
        )
        pretrained = str(result.fit.best_checkpoint)
        summaries.append({"step": index, "image_size": step.image_size, **result.metrics})
    shutil.copy2(pretrained, out / BEST)
    return BackboneResult(checkpoint=out / BEST, steps=summaries)
