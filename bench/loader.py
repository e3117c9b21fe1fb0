"""DataLoader throughput with the paper's augmentation versus what the model consumes.

The loader must not be the bottleneck: the last column is loader img/s / model img/s (> 1 means
the model, not the data, limits training). Both are measured here, in the same run, on CPU.

    .venv/bin/python bench/loader.py [--workers 0 1 2] [--threads N]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch
from throughput import RandomSplit, loader_rate, training_rate

from psr.data.transforms import AugmentConfig
from psr.models import create_model

EMBEDDED = {"image_size": 64, "width": 0.125, "sr_features": 16, "sr_res_blocks": 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads for the model")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = create_model("psr", num_classes=8, **EMBEDDED)
    model_rate = training_rate(model, 64, 32, steps=6, device=torch.device("cpu"), warmup=1)

    cases = [
        ("FER+ 48px gray -> S=96", RandomSplit(1024, side=48, channels=1), 96, AugmentConfig()),
        ("RAF-DB 100px RGB -> S=100", RandomSplit(512, 100, 3, 7), 100, AugmentConfig.rafdb()),
        ("embedded 64px RGB -> S=64", RandomSplit(1024, side=64, channels=3), 64, AugmentConfig()),
    ]
    print(f"embedded model trains at {model_rate:.1f} img/s on {args.threads} CPU threads")
    print(f"{'source -> input':<28}{'workers':>8}{'loader img/s':>14}{'loader/model':>14}")
    for name, split, size, aug in cases:
        for workers in args.workers:
            rate = loader_rate(split, size, args.batch_size, args.batches, workers, aug)
            print(f"{name:<28}{workers:>8}{rate:>14.1f}{rate / model_rate:>14.1f}")


if __name__ == "__main__":
    main()
