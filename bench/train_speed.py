"""Training speed on CPU: images/s of the embedded-default PSR (small width, S=64) and a few
steps of the paper's configuration (S=96, width 1), model alone and with the augmenting loader.

    .venv/bin/python bench/train_speed.py [--threads N] [--steps N]
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch
from throughput import RandomSplit, loader_rate, training_rate

from psr.engine import PhaseConfig, TrainConfig, fit
from psr.models import create_model

#: The embedded default: what the synthetic pipeline trains on a laptop CPU.
EMBEDDED = {"image_size": 64, "width": 0.125, "sr_features": 16, "sr_res_blocks": 2}
#: The paper: S=96, full-width VGG16-bn, EDSR-baseline (64 features, 16 blocks).
PAPER = {"image_size": 96, "width": 1.0, "sr_features": 64, "sr_res_blocks": 16}


def fit_rate(split: RandomSplit, batch_size: int) -> float:
    """images/s that psr.engine.fit logs for one epoch of the embedded model (loader in-process,
    so augmentation time counts)."""
    torch.manual_seed(0)
    model = create_model("psr", num_classes=8, **EMBEDDED)
    cfg = TrainConfig(
        phase1=PhaseConfig(epochs=1),
        phase2=PhaseConfig(epochs=0),
        batch_size=batch_size,
        workers=0,
        device="cpu",
        progress=False,
    )
    with tempfile.TemporaryDirectory() as out:
        result = fit(model, split, RandomSplit(64), cfg, out)
    return result.history[0]["images_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (embedded)")
    parser.add_argument("--batch-size", type=int, default=64, help="params.yaml: 64")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    torch.manual_seed(0)

    rows = []
    for name, cfg, steps, batch in [
        ("embedded (w=0.125, S=64)", EMBEDDED, args.steps, args.batch_size),
        ("paper (w=1, S=96)", PAPER, 2, 16),
    ]:
        model = create_model("psr", num_classes=8, **cfg)
        model_rate = training_rate(model, cfg["image_size"], batch, steps, cpu, warmup=1)
        rows.append((name, batch, model_rate))

    split = RandomSplit(512)
    load = loader_rate(split, EMBEDDED["image_size"], args.batch_size, batches=8, workers=0)
    end_to_end = fit_rate(split, args.batch_size)
    print(f"torch {torch.__version__}, CPU threads {args.threads}")
    print(f"{'configuration':<28}{'batch':>6}{'train img/s':>14}")
    for name, batch, rate in rows:
        print(f"{name:<28}{batch:>6}{rate:>14.1f}")
    print(f"{'embedded, psr.engine.fit':<28}{args.batch_size:>6}{end_to_end:>14.1f}")
    print(f"{'augmenting loader, 0 workers':<28}{args.batch_size:>6}{load:>14.1f}")
    print(f"loader / embedded model: {load / rows[0][2]:.1f}x (in-process; workers add more)")


if __name__ == "__main__":
    main()
