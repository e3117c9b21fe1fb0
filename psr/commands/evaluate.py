"""``psr evaluate``: metrics, predictions, figures and an HTML report for one split."""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

from psr.uris import redact

HELP = (
    "evaluate a checkpoint on a prepared split: metrics.json, predictions.csv, figures, report.html"
)
#: ``models:/<name>/<version>`` or ``models:/<name>@<alias>``: a registered version.
REGISTERED = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/]+))/?$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", help="inference checkpoint (best.pt)")
    model.add_argument(
        "--model-uri", help="MLflow model URI, e.g. models:/psr-fer@champion or models:/psr-fer/3"
    )
    parser.add_argument("--data", required=True, help="prepared dataset directory")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--out", required=True, help="output directory (replaced as a whole)")
    parser.add_argument(
        "--tta",
        choices=("off", "on", "both"),
        default="both",
        help="test-time augmentation as in the paper; 'both' (default) reports the plain pass "
        "beside it at no extra cost",
    )
    parser.add_argument("--tta-repeats", type=int, default=3, help="TTA repeats (paper: 3)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the random TTA views and the bootstrap"
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        help="bootstrap resamples for the 95 %% intervals (0: none; default: 1000)",
    )
    parser.add_argument("--by-sidecar", help="per-sample CSV (e.g. the generator's generation.csv)")
    parser.add_argument(
        "--by-column",
        help="sidecar column to break accuracy down by (default: face_size when it has one)",
    )
    parser.add_argument(
        "--by-key", help="sidecar column holding the prepared sample ids (default: id)"
    )
    parser.add_argument("--bins", type=int, default=5, help="equal-count bins of a numeric column")


def registered_provenance(uri: str) -> dict[str, str]:
    """The registry's record of a ``models:/`` URI: name, version, its run and source
    (other URIs: just the URI)."""
    rows = {"model URI": redact(uri)}
    match = REGISTERED.match(uri)
    if match is None:
        return rows
    from mlflow import MlflowClient

    client = MlflowClient()
    name = match["name"]
    if match["version"] is not None:
        found = client.get_model_version(name, match["version"])
    else:
        found = client.get_model_version_by_alias(name, match["alias"])
    rows["registered model"] = f"{name} version {found.version}"
    if found.aliases:
        rows["aliases"] = ", ".join(sorted(found.aliases))
    if found.run_id:
        rows["run id"] = found.run_id
    rows["source"] = redact(str(found.source))
    return rows


def run(args: argparse.Namespace) -> int:
    from psr.jobs import evaluate
    from psr.metrics import HEADLINE

    if args.by_column and not args.by_sidecar:
        raise ValueError("--by-column needs --by-sidecar (the table holding that column)")
    cfg = evaluate.EvaluateConfig(
        split=args.split,
        tta=args.tta != "off",
        compare_plain=args.tta == "both",
        tta_repeats=args.tta_repeats,
        batch_size=args.batch_size,
        device=args.device,
        workers=args.workers,
        seed=args.seed,
        bootstrap=args.bootstrap,
        breakdown_by=args.by_column or evaluate.AUTO,
        breakdown_key=args.by_key,
        bins=args.bins,
    )
    with tempfile.TemporaryDirectory(prefix="psr-model-") as tmp:
        provenance = None
        checkpoint = args.checkpoint
        if args.model_uri:
            import mlflow.artifacts

            from psr.inference import find_checkpoint

            provenance = registered_provenance(args.model_uri)
            local = mlflow.artifacts.download_artifacts(artifact_uri=args.model_uri, dst_path=tmp)
            checkpoint = find_checkpoint(Path(local), args.model_uri)
        result = evaluate.run(
            cfg, checkpoint, args.data, args.out, sidecar=args.by_sidecar, provenance=provenance
        )
    print(f"{'metric':<10}" + "".join(f"{name:>24}" for name in result.results))
    for metric in HEADLINE:
        row = "".join(_with_interval(r.metrics, metric) for r in result.results.values())
        print(f"{metric:<10}{row}")
    if result.breakdown is not None:
        print(f"accuracy by {result.breakdown_column}:")
        print(result.breakdown.to_string(index=False, float_format="%.4f"))
    print(f"wrote {args.out}/report.html")
    return 0


def _with_interval(metrics: dict, metric: str) -> str:
    """``0.4560 [0.4391, 0.4733]``, right-aligned in 24 characters (no interval: the value)."""
    text = f"{metrics[metric]:.4f}"
    if f"{metric}_ci_low" in metrics:
        text += f" [{metrics[f'{metric}_ci_low']:.4f}, {metrics[f'{metric}_ci_high']:.4f}]"
    return f"{text:>24}"
