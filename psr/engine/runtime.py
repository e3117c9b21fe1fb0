"""Where and how the loop computes: device, mixed precision, memory format and DDP rank."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from psr.engine.config import TrainConfig
from psr.engine.distributed import DistInfo


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dist: DistInfo
    amp_dtype: torch.dtype | None  # None: full precision
    memory_format: torch.memory_format

    @classmethod
    def create(cls, cfg: TrainConfig, device: torch.device, dist: DistInfo) -> Runtime:
        channels_last = cfg.channels_last and device.type == "cuda"
        return cls(
            device=device,
            dist=dist,
            amp_dtype=resolve_amp(cfg.amp, device),
            memory_format=torch.channels_last if channels_last else torch.preserve_format,
        )

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling is needed for fp16 only (bf16 has fp32's range)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def autocast(self) -> AbstractContextManager:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def batch(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Asynchronous host-to-device copies (the loader pins memory on CUDA)."""
        images = images.to(self.device, non_blocking=True, memory_format=self.memory_format)
        return images, targets.to(self.device, non_blocking=True)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 where the GPU supports it, else fp16 (with a GradScaler); off on CPU."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if amp == "bf16" else torch.float16
