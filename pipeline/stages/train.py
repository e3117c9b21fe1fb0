"""Stage ``train``: the PSR model on the prepared dataset (psr.engine.fit).

Starts from ``params.yaml``'s ``model`` and ``train`` sections, with the SR network initialised
from the sr_pretrain stage (unless ``model.sr_weights`` names a file) and the tuned values of the
tune stage written over them (``reports/tune/best_params.json``; empty when tuning is disabled).
Writes ``models/psr/best.pt`` (inference checkpoint) and ``last.pt`` (resumable state), the
per-epoch history for ``dvc plots`` and the final metrics for ``dvc metrics``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import mlflow
import pandas as pd

from pipeline import tracking
from pipeline.params import Params
from pipeline.stages.common import report_dir, run_record_path, stage_main
from pipeline.training import apply_overrides, build_network, load_prior, with_sr_weights
from pipeline.workspace import read_json, write_json_atomic, write_text_atomic

STAGE = "train"
OUT_DIR = Path("models/psr")
BEST_PARAMS_FILE = Path("reports/tune/best_params.json")
METRICS_FILE = report_dir(STAGE) / "metrics.json"
HISTORY_FILE = report_dir(STAGE) / "history.csv"
log = logging.getLogger(__name__)


def resolve(params: Params) -> tuple[Params, dict]:
    """params.yaml + SR weights + tuned values -> what this stage trains; and the tuned values."""
    params = with_sr_weights(params)
    tuned = read_json(BEST_PARAMS_FILE).get("params") or {}
    return apply_overrides(params, tuned), tuned


class HistoryWriter:
    """Rewrite the per-epoch history CSV after every epoch (a crash keeps the curve so far)."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict[str, float]] = []

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        self.rows.append(dict(metrics))
        write_text_atomic(self.path, pd.DataFrame(self.rows).to_csv(index=False))


def run(params: Params) -> None:
    from psr.data.prepared import load_split, read_manifest
    from psr.engine import fit

    manifest = read_manifest(params.prepared_dir)
    params, tuned = resolve(params)
    report_dir(STAGE).mkdir(parents=True, exist_ok=True)
    logged = {
        "model": params.model.model_dump(mode="json"),
        "train": params.train.model_dump(mode="json"),
    }
    with tracking.stage_run(
        STAGE,
        params.dataset_name,
        params=logged,
        record=run_record_path(STAGE),
        manifest=manifest,
        tags={"psr.tuned": ",".join(sorted(tuned)) or "none"},
    ):
        train = load_split(params.prepared_dir, "train")
        valid = load_split(params.prepared_dir, "valid")
        model = build_network(params, train.class_names)
        result = fit(
            model,
            train,
            valid,
            params.train,
            OUT_DIR,
            prior=load_prior(train.class_names),
            callbacks=[tracking.epoch_logger(), HistoryWriter(HISTORY_FILE)],
        )
        best = result.history[result.best_epoch]
        metrics = {
            "best_valid_acc": float(result.best_metric),
            "best_valid_loss": float(best["valid_loss"]),
            "best_epoch": int(result.best_epoch),
            "epochs": len(result.history),
            "stopped_early": bool(result.stopped_early),
        }
        write_json_atomic(METRICS_FILE, metrics)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.log_artifact(str(HISTORY_FILE))
        mlflow.log_dict(logged, "resolved_params.json")
        log.info("best valid accuracy %.4f at epoch %d", result.best_metric, result.best_epoch)


main = stage_main(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
