"""``psr prepare``: a raw dataset (FER+, RAF-DB, AffectNet, folder) -> data/prepared/<name>/."""

from __future__ import annotations

import argparse

HELP = "convert a raw dataset into the prepared format (<split>.npy, <split>.csv, manifest.json)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        required=True,
        choices=("ferplus", "rafdb", "affectnet", "affectnet_compact", "folder"),
    )
    parser.add_argument("--source", required=True, help="folder holding the raw dataset")
    parser.add_argument("--out", default="data/prepared", help="parent of the prepared folder")
    parser.add_argument("--name", help="prepared folder name (default: the dataset)")
    parser.add_argument("--votes", help="FER+ vote file (default: <source>/fer2013new.csv)")
    parser.add_argument("--image-size", type=int, help="square side (default: native, else 100)")
    parser.add_argument(
        "--vote-mode",
        choices=("majority", "probability", "crossentropy", "multi_target"),
        default="crossentropy",
        help="FER+ training targets (default: crossentropy); valid/test always use majority",
    )
    parser.add_argument("--num-classes", type=int, choices=(7, 8), help="7 drops contempt")
    parser.add_argument("--rafdb-images", choices=("aligned", "original"), default="aligned")
    parser.add_argument("--n-folds", type=int, default=5, help="validation: one of n folds")
    parser.add_argument("--fold", type=int, default=0, help="which fold is validation")
    parser.add_argument("--valid-fraction", type=float, help="instead of folds: holdout share")
    parser.add_argument(
        "--valid-per-class",
        type=int,
        help="instead of folds: a class-balanced validation set of this many images per class",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--face-margin", type=float, default=0.0, help="AffectNet box margin")
    parser.add_argument(
        "--align-faces",
        action="store_true",
        help="datasets of whole photos: detect the largest face (MTCNN) and align it by its "
        "landmarks; images without a face are skipped",
    )
    parser.add_argument("--workers", type=int, help="decoding processes (default: all cores)")
    parser.add_argument("--max-bad-fraction", type=float, default=0.01)
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    from psr.jobs import prepare

    cfg = prepare.PrepareConfig(
        dataset=args.dataset,
        source=args.source,
        name=args.name,
        votes=args.votes,
        image_size=args.image_size,
        vote_mode=args.vote_mode,
        num_classes=args.num_classes,
        rafdb_images=args.rafdb_images,
        n_folds=args.n_folds,
        fold=args.fold,
        valid_fraction=args.valid_fraction,
        valid_per_class=args.valid_per_class,
        seed=args.seed,
        face_margin=args.face_margin,
        align_faces=args.align_faces,
        workers=args.workers,
        max_bad_fraction=args.max_bad_fraction,
        progress=not args.no_progress,
    )
    result = prepare.run(cfg, args.out)
    counts = ", ".join(f"{split} {n}" for split, n in result.counts.items())
    print(f"{result.root}: {counts} ({result.skipped} skipped)")
    return 0
