"""Stage ``evaluate``: the trained model on the test split, with the paper's TTA.

Writes ``reports/evaluate/`` through psr.report: ``metrics.json`` (accuracy, macro-F1, UAR, NLL,
ECE, per-branch accuracy), ``predictions.csv`` (``id,actual,predicted``: DVC's confusion
template), ``calibration.csv``, figures and ``report.html``. On the synthetic dataset the
accuracy can be broken down by a generation parameter (``evaluate.breakdown_by``).
"""

from __future__ import annotations

import logging
import sys

import mlflow

from pipeline import tracking
from pipeline.params import RAW_DIR, Params
from pipeline.stages.common import report_dir, run_record_path, stage_main
from pipeline.stages.train import OUT_DIR as MODEL_DIR

STAGE = "evaluate"
OUT_DIR = report_dir(STAGE)
CHECKPOINT = MODEL_DIR / "best.pt"
#: Headline numbers logged as MLflow metrics (the full document is an artifact).
LOGGED = ("accuracy", "macro_f1", "uar", "nll", "ece")
log = logging.getLogger(__name__)


def run(params: Params) -> None:
    from psr.data.prepared import read_manifest
    from psr.data.synthetic import GENERATION_FILE
    from psr.report import report_checkpoint

    cfg = params.evaluate
    manifest = read_manifest(params.prepared_dir)
    with tracking.stage_run(
        STAGE,
        params.dataset_name,
        params={"evaluate": cfg.model_dump(mode="json")},
        record=run_record_path(STAGE),
        manifest=manifest,
    ):
        breakdown = {}
        if cfg.breakdown_by:
            breakdown = {"sidecar": RAW_DIR / GENERATION_FILE, "by_column": cfg.breakdown_by}
        results, _ = report_checkpoint(
            CHECKPOINT,
            params.prepared_dir,
            OUT_DIR,
            split=cfg.split,
            tta=("both" if cfg.compare_plain else "on") if cfg.tta else "off",
            tta_repeats=cfg.tta_repeats,
            batch_size=cfg.batch_size,
            device=cfg.device,
            workers=cfg.workers,
            seed=cfg.seed,
            **breakdown,
        )
        for variant, result in results.items():
            prefix = "" if variant == next(iter(results)) else f"{variant}_"
            mlflow.log_metrics(
                {f"{prefix}{k}": float(result.metrics[k]) for k in LOGGED if k in result.metrics}
            )
        mlflow.log_artifacts(str(OUT_DIR), artifact_path="evaluation")
        headline = next(iter(results.values())).metrics
        log.info("%s accuracy %.4f (%s)", cfg.split, headline["accuracy"], next(iter(results)))


main = stage_main(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
