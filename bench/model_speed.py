"""Training speed of the PSR family on CPU: forward+backward images/s and FLOPs per image.

Compares the paper's PSR (width 1, S=96, K=8, EDSR 64x16) with the single-scale vgg16_bn
baseline at the same S, and shows the small variant used by the embedded default. Ratios are
measured in the same run (the machine may be shared and noisy).

    .venv/bin/python bench/model_speed.py [--batch 8] [--steps 3] [--threads N]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from psr.losses import build_loss
from psr.models import create_model

CONFIGS = {
    "psr (paper)": {"name": "psr", "num_classes": 8, "image_size": 96},
    "vgg16 (baseline)": {"name": "vgg16", "num_classes": 8, "image_size": 96},
    "psr small (embedded)": {
        "name": "psr",
        "num_classes": 7,
        "image_size": 64,
        "width": 0.25,
        "sr_features": 16,
        "sr_res_blocks": 2,
    },
}


def train_step(model, loss_fn, x, y) -> None:
    model.zero_grad(set_to_none=True)
    loss_fn(model(x), y).backward()


def measure(cfg: dict, batch: int, steps: int) -> dict:
    torch.manual_seed(0)
    model = create_model(**cfg).train()
    size, k = cfg["image_size"], cfg["num_classes"]
    x, y = torch.randn(batch, 3, size, size), torch.arange(batch) % k
    loss_fn = build_loss("ce", k)
    with FlopCounterMode(display=False) as counter:
        train_step(model, loss_fn, x, y)  # also the warm-up step
    start = time.perf_counter()
    for _ in range(steps):
        train_step(model, loss_fn, x, y)
    seconds = time.perf_counter() - start
    return {
        "size": size,
        "params": sum(p.numel() for p in model.parameters()) / 1e6,
        "gflop": counter.get_total_flops() / batch / 1e9,
        "img_s": batch * steps / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {name: measure(cfg, args.batch, args.steps) for name, cfg in CONFIGS.items()}
    base = results["vgg16 (baseline)"]
    print(f"CPU, {args.threads} threads, batch {args.batch}, {args.steps} timed fwd+bwd steps")
    header = (
        f"{'model':<22}{'S':>5}{'params M':>10}{'GFLOP/img':>11}{'img/s':>9}"
        f"{'time x vgg16':>14}{'FLOP x vgg16':>14}"
    )
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        print(
            f"{name:<22}{r['size']:>5}{r['params']:>10.2f}{r['gflop']:>11.2f}{r['img_s']:>9.2f}"
            f"{base['img_s'] / r['img_s']:>14.2f}{r['gflop'] / base['gflop']:>14.2f}"
        )


if __name__ == "__main__":
    main()
