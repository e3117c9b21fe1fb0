"""GPU training speed of the paper's configuration (PSR, VGG16-bn width 1, EDSR, S=96, batch 64)
with and without AMP / channels_last / torch.compile, and the augmenting loader's rate beside it.

Runs on any CUDA machine; without CUDA it says so and exits with status 1.

    .venv/bin/python bench/gpu.py [--batch-size 64] [--steps 30] [--workers 8] [--no-compile]
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch
from throughput import RandomSplit, loader_rate, training_rate

from psr.models import create_model

PAPER = {"image_size": 96, "width": 1.0, "sr_features": 64, "sr_res_blocks": 16}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=64, help="paper FER+: 64")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("bench/gpu.py needs a CUDA GPU; torch sees none (try bench/train_speed.py on CPU)")
        return 1
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    variants = [
        ("fp32", "off", False, False),
        (amp, amp, False, False),
        (f"{amp} + channels_last", amp, True, False),
    ]
    if not args.no_compile:
        variants.append((f"{amp} + channels_last + compile", amp, True, True))

    print(
        f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, "
        f"batch {args.batch_size}, S=96"
    )
    print(f"{'variant':<36}{'train img/s':>12}{'vs fp32':>9}")
    base = None
    for name, amp_mode, channels_last, compile in variants:
        torch.manual_seed(0)
        model = create_model("psr", num_classes=8, **PAPER)
        rate = training_rate(
            model,
            96,
            args.batch_size,
            args.steps,
            device,
            amp=amp_mode,
            channels_last=channels_last,
            compile=compile,
            warmup=5 if compile else 3,
        )
        base = base or rate
        print(f"{name:<36}{rate:>12.1f}{rate / base:>8.2f}x", flush=True)
        best = rate
        del model
        torch.cuda.empty_cache()

    split = RandomSplit(4096, side=48, channels=1)
    load = loader_rate(
        split, 96, args.batch_size, batches=50, workers=args.workers, pin_memory=True
    )
    print(f"{'loader (FER+ 48px -> 96, augmented)':<36}{load:>12.1f}   ({args.workers} workers)")
    verdict = "keeps up" if load >= best else "is the bottleneck: raise --workers"
    print(f"loader / fastest variant: {load / best:.2f}x, the loader {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
