"""Training engine: typed config, one-cycle schedules, the loop, checkpoints and DDP."""

from psr.engine.config import LossConfig, PhaseConfig, TrainConfig
from psr.engine.loop import FitResult, NonFiniteLossError, fit

__all__ = ["FitResult", "LossConfig", "NonFiniteLossError", "PhaseConfig", "TrainConfig", "fit"]
