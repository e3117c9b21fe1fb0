"""Stage ``priors``: the PDLS label prior of the prepared dataset, in its class order.

The paper's prior comes from FER+ crowd votes (the training split's own votes for FER+ and the
embedded default; ``priors.votes_file`` re-indexed for RAF-DB and AffectNet); ``uniform`` turns
PDLS into plain label smoothing (the paper's ablation).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import mlflow
import numpy as np

from pipeline import tracking
from pipeline.params import Params
from pipeline.stages.common import report_dir, run_record_path, stage_main

STAGE = "priors"
PRIORS_FILE = Path("data/priors/priors.json")
log = logging.getLogger(__name__)


def compute(params: Params) -> tuple[tuple[str, ...], np.ndarray, str]:
    """``(class_names, matrix [K, K], source)`` for the configured prior."""
    from psr.data.prepared import read_manifest
    from psr.priors import prior_for_dataset, uniform

    root = params.prepared_dir
    cfg = params.priors
    if cfg.kind == "uniform":
        names = tuple(read_manifest(root)["class_names"])
        return names, uniform(len(names)), "uniform"
    return prior_for_dataset(root, cfg.votes_file, cfg.missing)


def run(params: Params) -> None:
    from psr.data.prepared import read_manifest
    from psr.priors import plot_priors, save_priors

    manifest = read_manifest(params.prepared_dir)
    with tracking.stage_run(
        STAGE,
        params.dataset_name,
        params={"priors": params.priors.model_dump(mode="json")},
        record=run_record_path(STAGE),
        manifest=manifest,
    ):
        names, matrix, source = compute(params)
        save_priors(PRIORS_FILE, names, matrix, source)
        figure = report_dir(STAGE) / "priors.png"
        plot_priors(figure, names, matrix, title=f"Label prior ({source})")
        mlflow.set_tag("psr.prior_source", source)
        mlflow.log_metric("prior_diagonal_mean", float(np.mean(np.diag(matrix))))
        mlflow.log_artifact(str(PRIORS_FILE))
        mlflow.log_artifact(str(figure))
        log.info("prior from %s, mean diagonal %.3f", source, float(np.mean(np.diag(matrix))))


main = stage_main(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
