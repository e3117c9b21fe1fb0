"""Typed training configuration. Defaults are the paper's FER+ recipe (official config
``ferplus-psr-edsr-x2.json`` run through prlab's ``training_adam_sgd``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from psr.data.transforms import AugmentConfig

#: FER+ discriminative max learning rates for [STN + SR], [shared high-level + FC], [low-level].
FERPLUS_LRS: tuple[float, float, float] = (1e-5, 5e-4, 1e-3)
#: RAF-DB's: the shared high-level + FC group learns 10x faster.
RAFDB_LRS: tuple[float, float, float] = (1e-5, 5e-3, 1e-3)


class PhaseConfig(BaseModel):
    """One one-cycle run (fastai v1 ``fit_one_cycle``) with its own optimiser."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(30, ge=0, description="epochs of this phase (0 skips it)")
    optimizer: Literal["adamw", "sgd"] = Field(
        "adamw",
        description="adamw: Adam with decoupled weight decay (fastai v1's default, true_wd); "
        "sgd: momentum SGD with decoupled weight decay (the official second phase)",
    )
    lrs: tuple[float, ...] = Field(
        FERPLUS_LRS,
        min_length=1,
        description="peak lr per model.param_groups() group: [STN + SR], [high + head], [low]; "
        "one value applies to every group",
    )
    weight_decay: float = Field(1e-2, ge=0, description="decoupled weight decay (fastai wd)")
    momentum: float = Field(
        0.9,
        ge=0,
        lt=1,
        description="SGD momentum when moms is None (the official SGD(momentum=0.9), which "
        "fastai's one-cycle replaces by the moms cycle)",
    )
    moms: tuple[float, float] | None = Field(
        (0.95, 0.85),
        description="momentum (SGD) or beta1 (AdamW) cycled moms[0] -> moms[1] -> moms[0]; "
        "fastai's one-cycle overrides the optimiser's own momentum with it, also for SGD; "
        "None keeps momentum (SGD) or beta1 = 0.9 (AdamW) constant",
    )
    beta2: float = Field(0.99, gt=0, lt=1, description="Adam beta2 (fastai v1 default 0.99)")
    pct_start: float = Field(0.3, gt=0, lt=1, description="fraction of steps warming up")
    div_factor: float = Field(25.0, gt=0, description="start lr = peak / div_factor")
    final_div: float = Field(25e4, gt=0, description="final lr = peak / final_div (fastai 25e4)")

    @model_validator(mode="after")
    def _check(self) -> PhaseConfig:
        if any(lr <= 0 for lr in self.lrs):
            raise ValueError(f"lrs must be positive, got {list(self.lrs)}")
        if self.final_div < self.div_factor:
            raise ValueError("final_div must be >= div_factor (the final lr is below the start)")
        return self


class LossConfig(BaseModel):
    """Which ``psr.losses.build_loss`` loss; the prior matrix is handed to ``fit`` by the caller."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        "soft_ce",
        description="a psr.losses.LOSS_NAMES entry: pdls, uniform_ls, soft_ce, ce, focal_pdls; "
        "official FER+: soft_ce against the vote distribution; RAF-DB: pdls, alpha 0.8",
    )
    alpha: float = Field(0.8, ge=0, le=1, description="PDLS weight of the label (RAF-DB 0.8)")
    gamma: float = Field(2.0, ge=0, description="focal exponent (focal losses only)")
    targets: Literal["auto", "labels", "distribution"] = Field(
        "auto",
        description="train against int labels or the split's soft_targets distribution "
        "(FER+ votes); auto = distribution when the split has soft_targets",
    )

    @field_validator("name")
    @classmethod
    def _known_loss(cls, name: str) -> str:
        from psr.losses import LOSS_NAMES

        if name not in LOSS_NAMES:
            raise ValueError(f"unknown loss {name!r}; valid: {list(LOSS_NAMES)}")
        return name


#: Change how fast a run goes, never its numbers: a trial's identity and results ignore them.
SPEED_ONLY_FIELDS = frozenset(
    {
        "workers",
        "pin_memory",
        "persistent_workers",
        "prefetch_factor",
        "progress",
        "device",
        "cudnn_benchmark",
    }
)
#: May differ between a run and its resumption: the recipe (and the one-cycle length) stays.
RESUME_FREE_FIELDS = SPEED_ONLY_FIELDS | {"amp", "channels_last", "compile", "early_stopping"}


class TrainConfig(BaseModel):
    """Everything ``psr.engine.fit`` needs besides the model, the data and the prior."""

    model_config = ConfigDict(extra="forbid")

    phase1: PhaseConfig = Field(
        default_factory=PhaseConfig, description="AdamW one-cycle from the initial weights"
    )
    phase2: PhaseConfig = Field(
        default_factory=lambda: PhaseConfig(optimizer="sgd"),
        description="SGD one-cycle from the phase-1 weights (same lrs, as prlab's lr_2 default)",
    )
    batch_size: int = Field(64, ge=1, description="per-process batch (FER+ 64, RAF-DB 32)")
    loss: LossConfig = Field(default_factory=LossConfig)
    sampler: Literal["shuffle", "balanced"] = Field(
        "shuffle", description="balanced = class-balanced WeightedRandomSampler"
    )
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    workers: int = Field(4, ge=0, description="DataLoader worker processes (0 = in-process)")
    pin_memory: bool = Field(True, description="page-locked batches for async GPU copies")
    persistent_workers: bool = Field(True, description="keep workers alive between epochs")
    prefetch_factor: int = Field(4, ge=1, description="batches each worker prepares ahead")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA if present")
    amp: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto",
        description="mixed precision; auto = bf16 if supported else fp16 (GradScaler), off on CPU",
    )
    channels_last: bool = Field(
        True,
        description="NHWC memory format: on CUDA the model and batches; on CPU the conversion "
        "inside PSR's branches (same math, faster)",
    )
    compile: bool = Field(False, description="torch.compile the model (slow first epoch)")
    cudnn_benchmark: bool = Field(True, description="let cuDNN pick the fastest conv kernels")
    seed: int = Field(
        0, ge=0, description="data order, augmentation, dropout (initial weights: the caller's)"
    )
    selection: Literal["official", "best_accuracy"] = Field(
        "official",
        description="which epoch best.pt keeps. official (prlab's training_adam_sgd with "
        "fastai's SaveModelCallback on valid_loss): in each phase the epoch with the lowest "
        "validation loss, the next phase starts from it, the result is the last phase's; "
        "best_accuracy: the highest validation accuracy over all phases, each phase continuing "
        "from the one before's last epoch",
    )
    early_stopping: int | None = Field(
        None, ge=1, description="stop after this many epochs without a better selected epoch"
    )
    data_fraction: float = Field(
        1.0, gt=0, le=1, description="stratified fraction of the training split (fast trials)"
    )
    progress: bool = Field(
        True, description="epoch and batch progress (psr.progress): a bar, or lines in a log"
    )

    @model_validator(mode="after")
    def _something_to_train(self) -> TrainConfig:
        if self.total_epochs < 1:
            raise ValueError("phase1.epochs + phase2.epochs must be at least 1")
        return self

    @property
    def phases(self) -> tuple[PhaseConfig, PhaseConfig]:
        return (self.phase1, self.phase2)

    @property
    def total_epochs(self) -> int:
        return self.phase1.epochs + self.phase2.epochs

    @classmethod
    def rafdb(cls) -> TrainConfig:
        """The official RAF-DB recipe: batch 32, 30 + 20 epochs, its lrs, PDLS with alpha 0.8,
        rotation 15, zoom 1.1."""
        return cls(
            phase1=PhaseConfig(lrs=RAFDB_LRS),
            phase2=PhaseConfig(optimizer="sgd", epochs=20, lrs=RAFDB_LRS),
            batch_size=32,
            loss=LossConfig(name="pdls", alpha=0.8),
            augment=AugmentConfig.rafdb(),
        )
