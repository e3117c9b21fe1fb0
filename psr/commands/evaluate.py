"""``psr evaluate``: metrics, predictions, figures and an HTML report for one split."""

from __future__ import annotations

import argparse

HELP = (
    "evaluate a checkpoint on a prepared split: metrics.json, predictions.csv, figures, report.html"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="inference checkpoint (best.pt)")
    parser.add_argument("--data", required=True, help="prepared dataset directory")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--out", required=True, help="output directory (replaced as a whole)")
    parser.add_argument(
        "--tta",
        choices=("off", "on", "both"),
        default="on",
        help="test-time augmentation as in the paper (default: on); 'both' reports with and "
        "without it side by side",
    )
    parser.add_argument("--tta-repeats", type=int, default=3, help="TTA repeats (paper: 3)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random TTA views")
    parser.add_argument("--by-sidecar", help="per-sample CSV (e.g. the generator's generation.csv)")
    parser.add_argument("--by-column", help="sidecar column to break accuracy down by")
    parser.add_argument(
        "--by-key", help="sidecar column holding the prepared sample ids (default: id)"
    )
    parser.add_argument("--bins", type=int, default=5, help="equal-count bins of a numeric column")


def run(args: argparse.Namespace) -> int:
    from psr.jobs import evaluate
    from psr.report import HEADLINE

    if bool(args.by_sidecar) != bool(args.by_column):
        raise ValueError("--by-sidecar and --by-column go together")
    cfg = evaluate.EvaluateConfig(
        split=args.split,
        tta=args.tta != "off",
        compare_plain=args.tta == "both",
        tta_repeats=args.tta_repeats,
        batch_size=args.batch_size,
        device=args.device,
        workers=args.workers,
        seed=args.seed,
        breakdown_by=args.by_column,
        breakdown_key=args.by_key,
        bins=args.bins,
    )
    result = evaluate.run(cfg, args.checkpoint, args.data, args.out, sidecar=args.by_sidecar)
    print(f"{'metric':<10}" + "".join(f"{name:>10}" for name in result.results))
    for metric in HEADLINE:
        row = "".join(f"{r.metrics[metric]:>10.4f}" for r in result.results.values())
        print(f"{metric:<10}{row}")
    if result.breakdown is not None:
        print(result.breakdown.to_string(index=False, float_format="%.4f"))
    print(f"wrote {args.out}/report.html")
    return 0
