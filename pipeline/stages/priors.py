"""Stage ``priors``: the PDLS label prior of the prepared dataset (job :mod:`psr.jobs.priors`)."""

from __future__ import annotations

import logging
import sys

import mlflow

from pipeline import tracking
from pipeline.params import Params
from pipeline.paths import PRIORS_FILE, report_dir, run_record_path
from pipeline.stages.common import stage_main

STAGE = "priors"
FIGURE = report_dir(STAGE) / "priors.png"
log = logging.getLogger(__name__)


def run(params: Params) -> None:
    from psr.data.prepared import read_manifest
    from psr.jobs import priors

    with tracking.stage_run(
        STAGE,
        params.dataset_name,
        params={"priors": params.priors.model_dump(mode="json")},
        record=run_record_path(STAGE),
        manifest=read_manifest(params.prepared_dir),
    ):
        result = priors.run(params.priors, params.prepared_dir, PRIORS_FILE, figure=FIGURE)
        mlflow.set_tag("psr.prior_source", result.source)
        mlflow.log_metric("prior_diagonal_mean", result.diagonal_mean)
        mlflow.log_artifact(str(PRIORS_FILE))
        mlflow.log_artifact(str(FIGURE))
        log.info("prior from %s, mean diagonal %.3f", result.source, result.diagonal_mean)


main = stage_main(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
