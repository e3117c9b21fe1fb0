"""What int8 costs a trained model: its predictions through float32 and int8 onnxruntime on a
prepared split, the int8 graph calibrated on the training split (``psr predict --runtime
onnx-int8 --calibrate-on``).

    .venv/bin/python bench/quantize.py --checkpoint models/psr.pt --data data/prepared/<name>
        [--split valid] [--calibration-images 256] [--threads N] [--markdown FILE]

Prints, per runtime, accuracy on the split and seconds for the whole split, then the two
runtimes' top-1 agreement and the mean and largest change of a class probability. The split
defaults to validation: a reported test split is never calibrated or chosen on here.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np

from psr.data.prepared import load_split
from psr.inference import Predictor
from psr.quantize import CALIBRATION_IMAGES, calibration_crops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="psr.models checkpoint")
    parser.add_argument("--data", type=Path, required=True, help="prepared dataset directory")
    parser.add_argument("--split", default="valid", help="the split predicted (default valid)")
    parser.add_argument("--calibration-images", type=int, default=CALIBRATION_IMAGES)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: all)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    if args.split == "train":
        parser.error("--split train is what calibrates: measure on another split")

    split = load_split(args.data, args.split)
    calibration = calibration_crops(args.data, args.calibration_images)
    faces = list(split.images)
    probabilities, seconds = {}, {}
    for runtime in ("onnx", "onnx-int8"):
        extra = {"calibration": calibration} if runtime == "onnx-int8" else {}
        predictor = Predictor.from_checkpoint(
            args.checkpoint, detect=False, runtime=runtime, threads=args.threads, **extra
        )
        if list(predictor.class_names) != list(split.class_names):
            raise SystemExit(
                f"{args.checkpoint} predicts {list(predictor.class_names)}, "
                f"{args.data} has {list(split.class_names)}"
            )
        start = time.perf_counter()
        probabilities[runtime] = predictor.probabilities(faces)
        seconds[runtime] = time.perf_counter() - start

    exact, int8 = probabilities["onnx"], probabilities["onnx-int8"]
    change = np.abs(int8 - exact)
    lines = [
        f"{args.checkpoint} on {args.data} {args.split} ({len(split)} faces), int8 calibrated "
        f"on {len(calibration)} train crops",
        "",
        "| runtime | accuracy | seconds for the split |",
        "|---|---|---|",
        *(
            f"| {runtime} | {(p.argmax(1) == split.labels).mean():.4f} | {seconds[runtime]:.1f} |"
            for runtime, p in probabilities.items()
        ),
        "",
        f"top-1 agreement {(exact.argmax(1) == int8.argmax(1)).mean():.4f}; class probability "
        f"change mean {change.mean():.4f}, max {change.max():.4f}",
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
