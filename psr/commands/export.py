"""``psr export``: turn an inference checkpoint into an ONNX model and check it."""

from __future__ import annotations

import argparse

HELP = "export a model checkpoint (best.pt) to ONNX (input [B,3,S,S] normalised -> probabilities)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="inference checkpoint, e.g. best.pt")
    parser.add_argument("--onnx", required=True, help="output .onnx file")
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="skip the onnxruntime-vs-PyTorch parity check on a random batch",
    )
    parser.add_argument(
        "--tolerance", type=float, default=1e-4, help="largest accepted probability difference"
    )


def run(args: argparse.Namespace) -> int:
    from psr.export import export_onnx, max_abs_difference
    from psr.models import load_model

    path = export_onnx(args.checkpoint, args.onnx)
    print(f"wrote {path}")
    if args.no_check:
        return 0
    model, _ = load_model(args.checkpoint)
    diff = max_abs_difference(model, path)
    print(f"onnxruntime vs PyTorch: max |difference| = {diff:.2e} (tolerance {args.tolerance:g})")
    return 0 if diff <= args.tolerance else 1
