"""Inference speed of the Predictor: latency per image (p50/p95) with and without face detection,
and batch throughput, for a small model and the paper's configuration (random weights).

    .venv/bin/python bench/inference.py [--runs 20] [--batch 32] [--device cpu] [--threads N]

Numbers depend on the machine and its load: compare rows of the same run only.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np
import torch

from psr.data.synthetic.frontal import frontal_face
from psr.detect import HaarDetector
from psr.inference import Predictor
from psr.models import create_model

NAMES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
CONFIGS = {
    # A CPU-sized member: same pyramid and STN, VGG at 1/4 width, a 4-block EDSR.
    "small": {"image_size": 96, "width": 0.25, "sr_res_blocks": 4, "sr_features": 32},
    # The paper (FER+): full vgg16_bn, EDSR-baseline x2 with 16 blocks of 64 channels, S = 96.
    "paper": {"image_size": 96},
}


def photo(height: int, width: int, face: int) -> np.ndarray:
    """An RGB photo with one face in the middle."""
    canvas = np.full((height, width, 3), (110, 140, 170), np.uint8)
    y, x = (height - face) // 2, (width - face) // 2
    canvas[y : y + face, x : x + face] = frontal_face(face)[:, :, None]
    return canvas


def timed(fn, runs: int, warmup: int = 2) -> np.ndarray:
    """Seconds of each of ``runs`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return np.array(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="timed calls per latency row")
    parser.add_argument("--batch", type=int, default=32, help="faces per throughput batch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    crop = photo(96, 96, 80)  # a face crop, as with --no-detect
    big = photo(720, 1280, 200)  # a 720p frame with one face
    huge = photo(3000, 4000, 900)  # a 12 MP photo (downscaled to 1024 px for detection)
    batch = [crop] * args.batch
    haar = HaarDetector()
    assert haar.detect(big) and haar.detect(huge), "the benchmark face must be detectable"

    print(f"device {args.device}, torch threads {torch.get_num_threads()}, runs {args.runs}")
    header = f"{'model':<7} {'params':>7} {'case':<28} {'p50 ms':>9} {'p95 ms':>9} {'img/s':>8}"
    print(header)
    print("-" * len(header))

    def row(model: str, params: str, case: str, seconds: np.ndarray, images: int = 1) -> None:
        p50, p95 = np.percentile(seconds, [50, 95]) * 1000
        rate = images / np.median(seconds)
        print(f"{model:<7} {params:>7} {case:<28} {p50:>9.1f} {p95:>9.1f} {rate:>8.1f}")

    row("-", "-", "Haar detection, 720p", timed(lambda: haar.detect(big), args.runs))
    row("-", "-", "Haar detection, 12 MP", timed(lambda: haar.detect(huge), args.runs))
    for name in args.models:
        model = create_model("psr", num_classes=len(NAMES), **CONFIGS[name])
        params = f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M"
        plain = Predictor(model, NAMES, CONFIGS[name]["image_size"], device=args.device)
        detecting = Predictor(
            model, NAMES, CONFIGS[name]["image_size"], detector=haar, device=args.device
        )
        assert detecting.predict_arrays([big])[0].status == "ok"
        row(
            name,
            params,
            "1 crop, no detection",
            timed(lambda p=plain: p.predict_arrays([crop]), args.runs),
        )
        row(
            name,
            params,
            "1 photo 720p, detection",
            timed(lambda p=detecting: p.predict_arrays([big]), args.runs),
        )
        plain.batch_size = args.batch
        runs = max(3, args.runs // 4)
        row(
            name,
            params,
            f"batch of {args.batch} crops",
            timed(lambda p=plain: p.predict_arrays(batch), runs, warmup=1),
            images=args.batch,
        )


if __name__ == "__main__":
    main()
