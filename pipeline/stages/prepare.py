"""Stage ``prepare``: raw dataset -> ``data/prepared/<name>/`` (job :mod:`psr.jobs.prepare`)."""

from __future__ import annotations

import logging
import sys

import mlflow

from pipeline import tracking
from pipeline.params import Params
from pipeline.paths import PREPARED_DIR, run_record_path
from pipeline.stages.common import stage_main

STAGE = "prepare"
log = logging.getLogger(__name__)


def run(params: Params) -> None:
    from psr.data.prepared import data_checksum
    from psr.jobs import prepare

    with tracking.stage_run(
        STAGE,
        params.dataset_name,
        params={"prepare": params.prepare.model_dump(mode="json")},
        record=run_record_path(STAGE),
    ) as run:
        result = prepare.run(params.prepare, PREPARED_DIR)
        mlflow.set_tag(tracking.TAG_DATA_CHECKSUM, data_checksum(result.manifest))
        counts = {f"images_{split}": n for split, n in result.counts.items()}
        counts["skipped"] = result.skipped
        mlflow.log_metrics(counts)
        mlflow.log_artifact(str(result.root / "manifest.json"))
        log.info("prepared %s (%s) in run %s", result.root, counts, run.info.run_id)


main = stage_main(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
