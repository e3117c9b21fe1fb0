"""Job ``sr_pretrain``: self-supervised pre-training of PSR's x2 super-resolution network.

The paper starts its EDSR from the authors' DIV2K weights. Without them we pre-train the same
network on the training faces: each face at the model's resolution S (normalised like the
model's input) is average-pooled to S/2, exactly as PSR's scaling block makes its low-resolution
view, and the network learns to restore it (L1 loss, as EDSR). Validation compares the restored
faces with bicubic upsampling (PSNR in pixel space). The weights load into ``model.sr``
(``ModelConfig.sr_weights``); the architecture comes from the model's config.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import DataLoader

from psr.data.prepared import load_split
from psr.data.torch_dataset import FERDataset
from psr.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from psr.device import resolve_device
from psr.engine.loop import seed_everything
from psr.fileio import atomic_write, write_json
from psr.jobs.history import HISTORY_FILE, METRICS_FILE, HistoryFile, write_history
from psr.models import build_sr
from psr.models.config import ModelConfig

SCALE = 2
WEIGHTS_FILE = f"sr_x{SCALE}.pt"
INFO_FILE = "sr.json"
#: SR kinds with weights to learn (interpolation has none).
LEARNED_KINDS = ("edsr", "espcn")
log = logging.getLogger(__name__)


class SRPretrainConfig(BaseModel):
    """The pre-training recipe (ours: the paper uses the official DIV2K weights)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True, description="false: train uses model.sr_weights as given (e.g. the official EDSR)"
    )
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0, description="Adam learning rate (cosine decay to 1%)")
    max_images: int | None = Field(
        None, ge=1, description="use at most this many training faces (seeded subset)"
    )
    valid_images: int = Field(256, ge=1, description="validation faces for the PSNR report")
    seed: int = Field(0, ge=0, description="initial weights, subsets, data order and flips")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1, description="torch CPU threads; null: torch's")


@dataclass
class SRPretrainResult:
    weights: Path | None  # None: nothing was trained (see reason)
    reason: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, float]:
        """The last epoch's validation numbers (empty when nothing was trained)."""
        return {k: v for k, v in (self.history[-1] if self.history else {}).items() if k != "epoch"}


def skip_reason(cfg: SRPretrainConfig, model: ModelConfig) -> str | None:
    """Why there is nothing to pre-train, or None."""
    if not cfg.enabled:
        return "disabled"
    if model.sr not in LEARNED_KINDS or SCALE not in (model.multiples or ()):
        return f"model.sr={model.sr} with multiples {model.multiples} has no x{SCALE} net to learn"
    return None


def run(
    cfg: SRPretrainConfig,
    model: ModelConfig,
    data: str | Path,
    out: str | Path,
    *,
    reports: str | Path | None = None,
    callbacks: Sequence = (),
) -> SRPretrainResult:
    """Pre-train the x2 SR net of ``model`` on ``data``'s faces; write ``out/sr_x2.pt`` and
    ``out/sr.json`` (what the weights are, or why there are none), and ``history.csv`` and
    ``metrics.json`` to ``reports`` (default ``out``). Seeded: the same inputs give the same
    weights byte for byte on CPU."""
    out, reports = Path(out), Path(reports or out)
    reason = skip_reason(cfg, model)
    if reason is not None:
        write_json(out / INFO_FILE, {"weights": None, "reason": reason})
        write_json(reports / METRICS_FILE, {})
        write_history(reports / HISTORY_FILE, [])
        log.info("no SR pre-training: %s", reason)
        return SRPretrainResult(weights=None, reason=reason)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)  # the seed decides the initial weights, then the data order
    sr = build_sr(
        model.sr,
        SCALE,
        features=model.sr_features,
        res_blocks=model.sr_res_blocks,
        res_scale=model.sr_res_scale,
    )
    history = pretrain(
        sr,
        load_split(data, "train"),
        load_split(data, "valid"),
        model.image_size,
        cfg,
        callbacks=[HistoryFile(reports / HISTORY_FILE), *callbacks],
    )
    state = {k: v.detach().cpu() for k, v in sr.state_dict().items()}
    weights = out / WEIGHTS_FILE
    atomic_write(weights, lambda f: torch.save(state, f))
    result = SRPretrainResult(weights=weights, history=history)
    write_json(out / INFO_FILE, {"weights": str(weights), "kind": model.sr, "scale": SCALE})
    write_json(reports / METRICS_FILE, result.metrics)
    return result


def pretrain(
    sr: nn.Module,
    train_split,
    valid_split,
    image_size: int,
    cfg: SRPretrainConfig,
    callbacks: Sequence = (),
) -> list[dict[str, float]]:
    """Train ``sr`` in place to restore faces of ``train_split``; return per-epoch metrics."""
    device = resolve_device(cfg.device)
    transform = eval_transform(image_size)
    train_rows = _subset(len(train_split), cfg.max_images, cfg.seed)
    valid_rows = _subset(len(valid_split), cfg.valid_images, cfg.seed)
    train = DataLoader(
        FERDataset(train_split, transform, indices=train_rows),
        batch_size=cfg.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    valid = DataLoader(
        FERDataset(valid_split, transform, indices=valid_rows), batch_size=cfg.batch_size
    )
    sr.to(device)
    optimizer = torch.optim.Adam(sr.parameters(), lr=cfg.lr)
    steps = cfg.epochs * len(train)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * step / steps))
    )
    history = []
    for epoch in range(cfg.epochs):
        sr.train()
        total, count = 0.0, 0
        for hr, _ in train:
            hr = hr.to(device)
            flip = torch.rand(hr.shape[0], device=device) < 0.5
            hr = torch.where(flip.view(-1, 1, 1, 1), hr.flip(-1), hr)  # random horizontal flip
            loss = F.l1_loss(sr(downsample(hr)), hr)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * hr.shape[0]
            count += hr.shape[0]
        metrics = {"epoch": epoch, "train_l1": total / count, **validate(sr, valid, device)}
        history.append(metrics)
        log.info(
            "epoch %d/%d: l1 %.4f, PSNR %.2f dB (bicubic %.2f dB)",
            epoch + 1,
            cfg.epochs,
            metrics["train_l1"],
            metrics["psnr_sr"],
            metrics["psnr_bicubic"],
        )
        for callback in callbacks:
            callback(epoch, dict(metrics))
    return history


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised ``[B, 3, H, W]`` -> pixel values in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x * std + mean).clamp(0.0, 1.0)


def psnr(restored: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of normalised ``[B, 3, H, W]`` tensors, measured in pixel space."""
    mse = (to_pixels(restored) - to_pixels(target)).pow(2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))


def downsample(hr: torch.Tensor) -> torch.Tensor:
    """``[B, 3, S, S]`` -> ``[B, 3, S/2, S/2]``: PSR's scaling block (average pooling)."""
    return F.avg_pool2d(hr, SCALE)


@torch.inference_mode()
def validate(sr: nn.Module, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """Mean PSNR of the SR network and of bicubic upsampling over ``loader``."""
    sr.eval()
    ours, bicubic = [], []
    for hr, _ in loader:
        hr = hr.to(device)
        lr = downsample(hr)
        ours.append(psnr(sr(lr), hr))
        up = F.interpolate(lr, scale_factor=SCALE, mode="bicubic", align_corners=False)
        bicubic.append(psnr(up, hr))
    psnr_sr = torch.cat(ours).mean().item()
    psnr_bicubic = torch.cat(bicubic).mean().item()
    return {"psnr_sr": psnr_sr, "psnr_bicubic": psnr_bicubic, "psnr_gain": psnr_sr - psnr_bicubic}


def _subset(n: int, limit: int | None, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(n)[:limit]) if limit and limit < n else np.arange(n)
