"""``psr synth``: write the synthetic in-the-wild FER dataset in a public dataset's format."""

from __future__ import annotations

import argparse

HELP = "generate the synthetic in-the-wild FER dataset (FER+, RAF-DB, AffectNet or folder format)"

_FORMATS = ("ferplus", "rafdb", "affectnet", "folder")
_DEFAULT_OUT = "data/raw/synthetic"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=_FORMATS, default=None, help="on-disk format (ferplus)")
    parser.add_argument("--out", default=None, help=f"dataset directory to write ({_DEFAULT_OUT})")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    parser.add_argument("--train", type=int, default=None, help="training images")
    parser.add_argument("--valid", type=int, default=None, help="validation images")
    parser.add_argument("--test", type=int, default=None, help="test images")
    parser.add_argument(
        "--class-balance",
        choices=("uniform", "ferplus"),
        default=None,
        help="uniform classes or the real FER+ training frequencies",
    )
    parser.add_argument(
        "--full-size",
        action="store_true",
        help="the real FER2013/FER+ size: 28,709 / 3,589 / 3,589 with FER+ class frequencies",
    )
    parser.add_argument(
        "--icml",
        action="store_true",
        help="ferplus: write icml_face_data.csv instead of fer2013.csv",
    )
    parser.add_argument("--workers", type=int, default=1, help="rendering processes")
    parser.add_argument(
        "--preview",
        default=None,
        metavar="PNG",
        help="write a contact sheet (rows = expressions); given alone, writes only the sheet",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _config(args: argparse.Namespace):  # -> SynthConfig (import kept inside run for a fast CLI)
    from psr.data.synthetic import SynthConfig

    given = {
        key: value
        for key, value in {
            "seed": args.seed,
            "train": args.train,
            "valid": args.valid,
            "test": args.test,
            "class_balance": args.class_balance,
        }.items()
        if value is not None
    }
    if args.icml:
        given["fer2013_file"] = "icml_face_data.csv"
    return SynthConfig.full_size(**given) if args.full_size else SynthConfig(**given)


def _wants_dataset(args: argparse.Namespace) -> bool:
    """``--preview`` alone writes only the sheet; naming a format or output writes the dataset."""
    return not args.preview or args.format is not None or args.out is not None


def run(args: argparse.Namespace) -> int:
    from psr.data.synthetic import write_dataset, write_preview

    cfg = _config(args)
    if args.preview:
        print(f"preview: {write_preview(args.preview, cfg)}")
    if not _wants_dataset(args):
        return 0
    fmt, out_dir = args.format or "ferplus", args.out or _DEFAULT_OUT
    out = write_dataset(fmt, out_dir, cfg, progress=not args.no_progress, workers=args.workers)
    print(f"{fmt}: {cfg.train} train / {cfg.valid} valid / {cfg.test} test -> {out}")
    return 0
