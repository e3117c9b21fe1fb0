"""Job ``sr_pretrain``: self-supervised pre-training of PSR's x2 super-resolution network.

The paper starts its EDSR from the authors' DIV2K weights. Without them we pre-train the same
network on the training faces: each face at the model's resolution S (normalised like the
model's input) is average-pooled to S/2, exactly as PSR's scaling block makes its low-resolution
view, and the network learns to restore it. Validation compares the restored faces with bicubic
upsampling (PSNR and SSIM in pixel space). The weights load into ``model.sr``
(``ModelConfig.sr_weights``); the architecture comes from the model's config.

The recipe is counted in optimizer steps, not epochs: a freshly initialised EDSR is a worse
upsampler than bicubic until it has taken on the order of a thousand Adam steps, whatever the
dataset's size. Small random patches (even offsets, so the pooling grid is PSR's) make those
steps cheap and varied; L1 is EDSR's loss. ``bench/sr_recipe.py`` measures the choices
(docs/sr_pretrain.md).
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
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from psr.data.prepared import load_split
from psr.data.torch_dataset import FERDataset
from psr.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform
from psr.device import resolve_device
from psr.engine.loop import seed_everything
from psr.faults import failpoint
from psr.fileio import atomic_write, write_json
from psr.jobs.history import HISTORY_FILE, METRICS_FILE, HistoryFile, write_history
from psr.models import build_sr
from psr.models.config import ModelConfig
from psr.progress import progress_bar

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
    steps: int = Field(2000, ge=1, description="optimizer steps (Adam, cosine decay to 1%)")
    batch_size: int = Field(16, ge=1, description="patches per step")
    patch_size: int | None = Field(
        32,
        ge=4,
        description="side of the random training patch of the S-sized face (even); "
        "null: whole faces",
    )
    lr: float = Field(3e-3, gt=0, description="Adam learning rate (cosine decay to 1%)")
    max_images: int | None = Field(
        None, ge=1, description="sample patches from at most this many training faces (seeded)"
    )
    valid_images: int = Field(256, ge=1, description="validation faces for PSNR and SSIM")
    valid_every: int = Field(250, ge=1, description="steps between validations (history rows)")
    seed: int = Field(0, ge=0, description="initial weights, subsets, data order and flips")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, ge=1, description="torch CPU threads; null: torch's")
    progress: bool = Field(True, description="a progress bar over the steps (psr.progress)")

    @field_validator("patch_size")
    @classmethod
    def _even_patch(cls, size: int | None) -> int | None:
        if size is not None and size % SCALE:
            raise ValueError(f"patch_size must be a multiple of {SCALE}, got {size}")
        return size


@dataclass
class SRPretrainResult:
    weights: Path | None  # None: nothing was trained (see reason)
    reason: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, float]:
        """The final validation numbers (empty when nothing was trained)."""
        return {k: v for k, v in (self.history[-1] if self.history else {}).items() if k != "step"}


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
    if cfg.patch_size is not None and cfg.patch_size > model.image_size:
        raise ValueError(
            f"sr_pretrain.patch_size={cfg.patch_size} exceeds the model's S={model.image_size}"
        )
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
    """Train ``sr`` in place to restore faces of ``train_split``; return the validation rows
    (one per ``valid_every`` steps and one at the end; callbacks get ``(step, row)``)."""
    device = resolve_device(cfg.device)
    transform = eval_transform(image_size)
    generator = torch.Generator().manual_seed(cfg.seed)
    faces = FERDataset(
        train_split, transform, indices=_subset(len(train_split), cfg.max_images, cfg.seed)
    )
    train = DataLoader(
        faces,
        batch_size=cfg.batch_size,
        sampler=RandomSampler(
            faces, replacement=True, num_samples=cfg.steps * cfg.batch_size, generator=generator
        ),
    )
    valid = DataLoader(
        FERDataset(
            valid_split, transform, indices=_subset(len(valid_split), cfg.valid_images, cfg.seed)
        ),
        batch_size=64,
    )
    sr.to(device)
    optimizer = torch.optim.Adam(sr.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
    )
    history: list[dict[str, float]] = []
    sr.train()
    total, count = 0.0, 0
    steps = progress_bar(train, desc="sr_pretrain", unit="step", enabled=cfg.progress)
    for step, (hr, _) in enumerate(steps, start=1):
        hr = augment(hr, cfg.patch_size, generator).to(device)
        loss = F.l1_loss(sr(downsample(hr)), hr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        failpoint("sr_pretrain.step")
        total, count = total + loss.item(), count + 1
        if step % 10 == 0:
            steps.set_postfix(l1=f"{total / count:.4f}", refresh=False)
        if step % cfg.valid_every and step != cfg.steps:
            continue
        row = {"step": step, "train_l1": total / count, **validate(sr, valid, device)}
        sr.train()
        total, count = 0.0, 0
        history.append(row)
        log.info(
            "step %d/%d: l1 %.4f, PSNR %.2f dB (bicubic %.2f), SSIM %.4f (bicubic %.4f)",
            step,
            cfg.steps,
            row["train_l1"],
            row["psnr_sr"],
            row["psnr_bicubic"],
            row["ssim_sr"],
            row["ssim_bicubic"],
        )
        for callback in callbacks:
            callback(step, dict(row))
    if history[-1]["psnr_gain"] <= 0:
        log.warning(
            "the SR network is %.2f dB below bicubic on validation faces: raise sr_pretrain.steps",
            -history[-1]["psnr_gain"],
        )
    return history


def augment(hr: torch.Tensor, patch: int | None, generator: torch.Generator) -> torch.Tensor:
    """A random horizontal flip and a random ``patch``-sided crop at even offsets per face."""
    flip = torch.rand(hr.shape[0], generator=generator) < 0.5
    hr = torch.where(flip.view(-1, 1, 1, 1), hr.flip(-1), hr)
    if patch is None:
        return hr
    starts = torch.randint(
        0, (hr.shape[-1] - patch) // SCALE + 1, (hr.shape[0], 2), generator=generator
    )
    return torch.stack(
        [
            face[:, i : i + patch, j : j + patch]
            for face, (i, j) in zip(hr, (starts * SCALE).tolist(), strict=True)
        ]
    )


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised ``[B, 3, H, W]`` -> pixel values in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x * std + mean).clamp(0.0, 1.0)


def psnr(restored: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of normalised ``[B, 3, H, W]`` tensors, measured in pixel space."""
    mse = (to_pixels(restored) - to_pixels(target)).pow(2).mean(dim=(1, 2, 3))
    return 10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))


def ssim(restored: torch.Tensor, target: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, valid
    region only) of normalised ``[B, 3, H, W]`` tensors in pixel space, averaged over channels."""
    if min(target.shape[-2:]) < window:
        raise ValueError(f"SSIM needs images of at least {window} px, got {list(target.shape)}")
    x, y = to_pixels(restored), to_pixels(target)
    coords = torch.arange(window, dtype=x.dtype, device=x.device) - (window - 1) / 2
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    g = (g / g.sum()).outer(g / g.sum()).expand(x.shape[1], 1, window, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, g, groups=x.shape[1])

    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return ssim_map.mean(dim=(1, 2, 3))


def downsample(hr: torch.Tensor) -> torch.Tensor:
    """``[B, 3, S, S]`` -> ``[B, 3, S/2, S/2]``: PSR's scaling block (average pooling)."""
    return F.avg_pool2d(hr, SCALE)


@torch.inference_mode()
def validate(sr: nn.Module, loader: DataLoader, device: torch.device) -> dict[str, float]:
    """Mean PSNR and SSIM of the SR network and of bicubic upsampling over ``loader``."""
    sr.eval()
    scores: dict[str, list[torch.Tensor]] = {}
    for hr, _ in loader:
        hr = hr.to(device)
        lr = downsample(hr)
        bicubic = F.interpolate(lr, scale_factor=SCALE, mode="bicubic", align_corners=False)
        for name, restored in (("sr", sr(lr)), ("bicubic", bicubic)):
            scores.setdefault(f"psnr_{name}", []).append(psnr(restored, hr))
            scores.setdefault(f"ssim_{name}", []).append(ssim(restored, hr))
    means = {k: torch.cat(v).mean().item() for k, v in scores.items()}
    means["psnr_gain"] = means["psnr_sr"] - means["psnr_bicubic"]
    means["ssim_gain"] = means["ssim_sr"] - means["ssim_bicubic"]
    return means


def _subset(n: int, limit: int | None, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(n)[:limit]) if limit and limit < n else np.arange(n)
