"""Training engine: typed config, one-cycle schedules, the loop, checkpoints and DDP."""

from psr.engine.config import (
    RESUME_FREE_FIELDS,
    SPEED_ONLY_FIELDS,
    LossConfig,
    PhaseConfig,
    TrainConfig,
)
from psr.engine.epoch import NonFiniteLossError
from psr.engine.loop import FitResult, fit

__all__ = [
    "RESUME_FREE_FIELDS",
    "SPEED_ONLY_FIELDS",
    "FitResult",
    "LossConfig",
    "NonFiniteLossError",
    "PhaseConfig",
    "TrainConfig",
    "fit",
]
