"""The int8 calibration options that ``psr predict --runtime onnx-int8`` and ``psr export --int8``
share: which prepared dataset's training split calibrates, and how many of its crops."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from psr.quantize import CALIBRATION_IMAGES

if TYPE_CHECKING:
    import numpy as np


def add_arguments(parser: argparse.ArgumentParser, needed_by: str) -> None:
    """``--calibrate-on DATA`` and ``--calibration-images N``, for the option ``needed_by``."""
    parser.add_argument(
        "--calibrate-on",
        metavar="DATA",
        help=f"{needed_by}: prepared dataset (data/prepared/<name>) whose train split calibrates "
        "the int8 graph",
    )
    parser.add_argument(
        "--calibration-images",
        type=int,
        metavar="N",
        help=f"{needed_by}: training crops drawn at random to calibrate on "
        f"(default {CALIBRATION_IMAGES})",
    )


def crops(args: argparse.Namespace, wanted: bool, needed_by: str) -> np.ndarray | None:
    """The calibration crops when ``wanted`` (the int8 option was given), else None; either
    option without the other is an error that names both."""
    if wanted != bool(args.calibrate_on):
        raise ValueError(f"--calibrate-on goes with {needed_by}, which needs it")
    if args.calibration_images is not None and not args.calibrate_on:
        raise ValueError(f"--calibration-images goes with {needed_by} and --calibrate-on")
    if not wanted:
        return None
    from psr.quantize import calibration_crops

    count = args.calibration_images
    return calibration_crops(args.calibrate_on, CALIBRATION_IMAGES if count is None else count)
