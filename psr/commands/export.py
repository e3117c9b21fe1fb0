"""``psr export``: turn an inference checkpoint into an ONNX model (float32, or int8 calibrated on
training faces) and check it against PyTorch."""

from __future__ import annotations

import argparse

from psr.commands import _calibration as calibration

HELP = "export a model checkpoint (best.pt) to ONNX (input [B,3,S,S] normalised -> probabilities)"
#: The largest accepted probability difference from PyTorch by default: float32 ONNX computes the
#: same function; int8 moved a trained model's class probabilities by at most 0.074 on its
#: validation split (BENCHMARKS.md, Inference).
TOLERANCE = {"float32": 1e-4, "int8": 0.1}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="inference checkpoint, e.g. best.pt")
    parser.add_argument("--onnx", required=True, help="output .onnx file")
    parser.add_argument(
        "--int8",
        action="store_true",
        help="quantise to int8 (weights per channel, uint8 activations) for the CPU, calibrated "
        "on --calibrate-on",
    )
    calibration.add_arguments(parser, "--int8")
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="skip the onnxruntime-vs-PyTorch check (float32: a random batch; int8: the "
        "calibration faces)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        help="largest accepted probability difference (default: "
        + ", ".join(f"{k} {v:g}" for k, v in TOLERANCE.items())
        + ")",
    )


def run(args: argparse.Namespace) -> int:
    from psr.export import export_onnx, max_abs_difference
    from psr.inference import Predictor

    crops = calibration.crops(args, args.int8, "--int8")
    predictor = Predictor.from_checkpoint(args.checkpoint, detect=False)
    batches = None if crops is None else [b.numpy() for b in predictor.normalised_batches(crops)]
    path = export_onnx(
        predictor.model, args.onnx, class_names=predictor.class_names, calibration=batches
    )
    kind = "float32" if crops is None else "int8"
    print(f"wrote {path} ({kind}" + ("" if crops is None else f", {len(crops)} crops") + ")")
    if args.no_check:
        return 0
    tolerance = TOLERANCE[kind] if args.tolerance is None else args.tolerance
    diff = max_abs_difference(predictor.model, path, inputs=batches)
    print(f"onnxruntime vs PyTorch: max |difference| = {diff:.2e} (tolerance {tolerance:g})")
    return 0 if diff <= tolerance else 1
