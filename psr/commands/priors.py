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
        "--kind",
        choices=("votes", "uniform"),
        default="votes",
        help="votes: the paper's prior (default); uniform: PDLS becomes plain label smoothing",
    )
    parser.add_argument(
        "--missing",
        choices=("error", "uniform"),
        default="error",
        help="a class with no training images: fail (default) or give it a uniform row",
    )


def run(args: argparse.Namespace) -> int:
    from psr.jobs import priors

    cfg = priors.PriorsConfig(kind=args.kind, votes_file=args.votes, missing=args.missing)
    result = priors.run(cfg, args.data, args.out, figure=args.png)
    k = len(result.class_names)
    print(f"{args.out}: {k}x{k} prior from {result.source}")
    return 0
