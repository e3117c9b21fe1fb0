"""Stage ``evaluate``: the trained model on the test split with the paper's TTA
(job :mod:`psr.jobs.evaluate`), into ``reports/evaluate/``. On the synthetic dataset accuracy is
broken down by a column of the generator's ``generation.csv`` (``evaluate.breakdown_by``).

The run carries the parameters of the train run that made the checkpoint (``model.*``,
``train.*``, tuned values included) beside its own ``evaluate.*``."""

from __future__ import annotations

import logging
import sys

import mlflow

from pipeline import tracking
from pipeline.params import Params
from pipeline.paths import CHECKPOINT, RAW_DIR, report_dir, run_record_path
from pipeline.stages.common import stage_main

STAGE = "evaluate"
OUT_DIR = report_dir(STAGE)
log = logging.getLogger(__name__)


def run(params: Params) -> None:
    from psr.data.prepared import read_manifest
    from psr.data.synthetic import GENERATION_FILE
    from psr.jobs import evaluate

    cfg = params.evaluate
    with tracking.stage_run(
        STAGE,
        params.dataset_name,
        params={"evaluate": cfg.model_dump(mode="json")},
        record=run_record_path(STAGE),
        manifest=read_manifest(params.prepared_dir),
    ):
        # the model's training parameters beside its test metrics: one view compares them
        if trained := tracking.recorded_run("train"):
            tracking.copy_params(trained)
            mlflow.set_tag("psr.run.train", trained.info.run_id)
        sidecar = RAW_DIR / GENERATION_FILE if cfg.breakdown_by else None
        result = evaluate.run(cfg, CHECKPOINT, params.prepared_dir, OUT_DIR, sidecar=sidecar)
        mlflow.log_metrics(result.logged_metrics())
        mlflow.log_artifacts(str(OUT_DIR), artifact_path="evaluation")
        name, headline = result.headline
        log.info("%s accuracy %.4f (%s)", cfg.split, headline.metrics["accuracy"], name)


main = stage_main(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
