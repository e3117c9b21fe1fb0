"""Stage ``prepare``: raw dataset -> ``data/prepared/<name>/`` (psr.data.prepare)."""

from __future__ import annotations

import logging
import sys

import mlflow

from pipeline import tracking
from pipeline.params import PREPARED_DIR, Params
from pipeline.stages.common import run_record_path, stage_main

STAGE = "prepare"
log = logging.getLogger(__name__)


def run(params: Params) -> None:
    from psr.data.prepare import prepare
    from psr.data.prepared import read_manifest

    with tracking.stage_run(
        STAGE,
        params.dataset_name,
        params={"prepare": params.prepare.model_dump(mode="json")},
        record=run_record_path(STAGE),
    ) as run:
        root = prepare(params.prepare, PREPARED_DIR)
        manifest = read_manifest(root)
        mlflow.set_tag(tracking.TAG_DATA_CHECKSUM, tracking.data_checksum(manifest))
        counts = {f"images_{split}": info["count"] for split, info in manifest["splits"].items()}
        counts["skipped"] = len(manifest.get("skipped") or [])
        mlflow.log_metrics(counts)
        mlflow.log_artifact(str(root / "manifest.json"))
        log.info("prepared %s (%s) in run %s", root, counts, run.info.run_id)


main = stage_main(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
