"""Stage ``sr_pretrain``: self-supervised pre-training of the x2 super-resolution network.

The paper starts its EDSR from the authors' DIV2K weights, which cannot be downloaded here. We
pre-train the same network on the training faces instead: each face at the model's resolution S
(normalised like the model's input) is average-pooled to S/2, exactly as PSR's scaling block makes
its low-resolution view, and the network learns to restore it (L1 loss, as EDSR). The report
compares the restored faces with bicubic upsampling on validation faces (PSNR in pixel space).
The state dict loads into ``model.sr`` (``model.sr_weights``).
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from pipeline import tracking
from pipeline.params import Params, SRPretrainParams
from pipeline.stages.common import report_dir, run_record_path, stage_main
from pipeline.workspace import write_json_atomic

STAGE = "sr_pretrain"
SCALE = 2
OUT_DIR = Path("models/sr")
WEIGHTS_FILE = OUT_DIR / f"sr_x{SCALE}.pt"
INFO_FILE = OUT_DIR / "sr.json"
METRICS_FILE = report_dir(STAGE) / "metrics.json"
HISTORY_FILE = report_dir(STAGE) / "history.csv"
LEARNED_KINDS = ("edsr", "espcn")
log = logging.getLogger(__name__)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised ``[B, 3, H, W]`` -> pixel values in [0, 1]."""
    from psr.data.transforms import IMAGENET_MEAN, IMAGENET_STD

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


def pretrain(
    sr: nn.Module,
    train_split,
    valid_split,
    image_size: int,
    cfg: SRPretrainParams,
    on_epoch=None,
) -> list[dict[str, float]]:
    """Train ``sr`` in place to restore faces of ``train_split``; return per-epoch metrics."""
    from psr.data.torch_dataset import FERDataset
    from psr.data.transforms import eval_transform

    device = _device(cfg.device)
    torch.manual_seed(cfg.seed)
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
            "epoch %d: l1 %.4f, PSNR %.2f dB (bicubic %.2f dB)",
            epoch,
            metrics["train_l1"],
            metrics["psnr_sr"],
            metrics["psnr_bicubic"],
        )
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    return history


def run(params: Params) -> None:
    from psr.data.prepared import load_split, read_manifest
    from psr.models import build_sr

    cfg, model = params.sr_pretrain, params.model
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    manifest = read_manifest(params.prepared_dir)
    logged = {"sr_pretrain": cfg.model_dump(mode="json")}
    logged["model"] = {k: getattr(model, k) for k in ("sr", "sr_features", "sr_res_blocks")}
    with tracking.stage_run(
        STAGE,
        params.dataset_name,
        params=logged,
        record=run_record_path(STAGE),
        manifest=manifest,
    ):
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        report_dir(STAGE).mkdir(parents=True, exist_ok=True)
        learnable = model.sr in LEARNED_KINDS and SCALE in model.multiples
        if not (cfg.enabled and learnable):
            reason = "disabled" if not cfg.enabled else f"model.sr={model.sr} has nothing to learn"
            write_json_atomic(INFO_FILE, {"weights": None, "reason": reason})
            write_json_atomic(METRICS_FILE, {})
            pd.DataFrame(columns=["epoch", "psnr_sr", "psnr_bicubic"]).to_csv(
                HISTORY_FILE, index=False
            )
            mlflow.set_tag("psr.sr_pretrain", reason)
            log.info("no SR pre-training: %s", reason)
            return
        sr = build_sr(
            model.sr,
            SCALE,
            features=model.sr_features,
            res_blocks=model.sr_res_blocks,
            res_scale=model.sr_res_scale,
        )
        history = pretrain(
            sr,
            load_split(params.prepared_dir, "train"),
            load_split(params.prepared_dir, "valid"),
            model.image_size,
            cfg,
            on_epoch=tracking.epoch_logger(),
        )
        state = {k: v.detach().cpu() for k, v in sr.state_dict().items()}
        tmp = WEIGHTS_FILE.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(WEIGHTS_FILE)
        final = {k: v for k, v in history[-1].items() if k != "epoch"}
        write_json_atomic(
            INFO_FILE, {"weights": str(WEIGHTS_FILE), "kind": model.sr, "scale": SCALE}
        )
        write_json_atomic(METRICS_FILE, final)
        pd.DataFrame(history).to_csv(HISTORY_FILE, index=False)
        mlflow.log_artifact(str(METRICS_FILE))
        mlflow.log_artifact(str(WEIGHTS_FILE))


main = stage_main(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
