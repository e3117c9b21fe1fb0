"""``psr priors``: the PDLS label prior of a prepared dataset -> priors.json (+ heatmap)."""

from __future__ import annotations

import argparse

HELP = "compute the label-prior matrix (paper's procedure) of a prepared dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="prepared dataset folder")
    parser.add_argument("--out", required=True, help="priors.json to write")
    parser.add_argument("--png", help="also save an annotated heatmap here")
    parser.add_argument(
        "--votes",
        help="FER+ vote file (fer2013new.csv): compute the prior from it and re-index it to the"
        " dataset's classes (needed when the dataset has no crowd votes)",
    )
    parser.add_argument(
        "--missing",
        choices=("error", "uniform"),
        default="error",
        help="a class with no training images: fail (default) or give it a uniform row",
    )


def run(args: argparse.Namespace) -> int:
    from psr.priors import plot_priors, prior_for_dataset, save_priors

    names, matrix, source = prior_for_dataset(args.data, args.votes, args.missing)
    save_priors(args.out, names, matrix, source)
    if args.png:
        plot_priors(args.png, names, matrix, title=f"Label prior ({source})")
    print(f"{args.out}: {len(names)}x{len(names)} prior from {source}")
    return 0
