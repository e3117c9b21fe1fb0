"""Stage ``tune``: Optuna search over ``tune.space``; writes the best values for ``train``.

- The study lives in ``tune.storage`` (default: SQLite ``optuna.db`` at the repository root, not
  a DVC output, so DVC never deletes it) under the name :func:`pipeline.tuning.study_for` gives
  it. ``tune.n_trials`` is the number of finished (complete or pruned) trials the study must
  hold: an interrupted run continues where it stopped, and parallel workers (the ``psr-tune``
  Prefect flow, JournalStorage) share the budget.
- Seeded TPE sampler (one seed per worker); the ``tune.pruner`` (Hyperband by default) fed
  with validation accuracy after every epoch; trial 0 is the untuned default
  (``tune.baseline_trial``); each trial is an MLflow run nested under this stage's run.

``python -m pipeline.stages.tune`` is the DVC stage; ``python -m pipeline.stages.tune worker
--parent-run-id ID --worker N`` only runs trials (what the parallel workers do).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import mlflow
import optuna
import pandas as pd

from pipeline import tracking, tuning
from pipeline.params import Params, load_params
from pipeline.paths import TUNE_BEST_FILE, report_dir, run_record_path
from pipeline.resolve import check_space
from pipeline.stages.common import guarded, stage_main
from psr.fileio import write_json

STAGE = tuning.STAGE
METRICS_FILE = report_dir(STAGE) / "metrics.json"
TRIALS_FILE = report_dir(STAGE) / "trials.csv"
HISTORY_PLOT = report_dir(STAGE) / "optimization_history.png"
IMPORTANCE_PLOT = report_dir(STAGE) / "param_importances.png"
log = logging.getLogger(__name__)


def _note_figure(path: Path, text: str) -> None:
    """A figure that says why a plot has nothing to show (DVC outputs must exist)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_plots(study: optuna.Study | None) -> None:
    """Optimisation history and parameter importances (optuna.visualization.matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    if study is None:
        for path in (HISTORY_PLOT, IMPORTANCE_PLOT):
            _note_figure(path, "tuning disabled (tune.enabled: false)")
        return
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    ax = vis.plot_optimization_history(study)
    ax.figure.savefig(HISTORY_PLOT, dpi=100, bbox_inches="tight")
    plt.close(ax.figure)
    if len(complete) >= 2 and study.best_trial.params:
        ax = vis.plot_param_importances(study)
        ax.figure.savefig(IMPORTANCE_PLOT, dpi=100, bbox_inches="tight")
        plt.close(ax.figure)
    else:
        _note_figure(IMPORTANCE_PLOT, f"importances need 2 complete trials, have {len(complete)}")


def write_disabled() -> None:
    write_json(TUNE_BEST_FILE, {"enabled": False, "params": {}})
    write_json(METRICS_FILE, {})
    pd.DataFrame(columns=["number", "state", "value"]).to_csv(TRIALS_FILE, index=False)
    write_plots(None)


def run(params: Params) -> None:
    from psr.data.prepared import read_manifest

    check_space(params)
    report_dir(STAGE).mkdir(parents=True, exist_ok=True)
    with tracking.stage_run(
        STAGE,
        params.dataset_name,
        params={"tune": params.tune.model_dump(mode="json")},
        record=run_record_path(STAGE),
        manifest=read_manifest(params.prepared_dir),
    ) as run:
        if not params.tune.enabled:
            write_disabled()
            mlflow.set_tag("psr.tune", "disabled")
            return
        params, name = tuning.study_for(params)
        mlflow.set_tag("optuna.study", name)
        study = tuning.optimize(params, name, run.info.run_id)
        document, metrics = tuning.summarize(study)
        write_json(TUNE_BEST_FILE, document)
        write_json(METRICS_FILE, metrics)
        study.trials_dataframe().to_csv(TRIALS_FILE, index=False)
        write_plots(study)
        mlflow.log_metrics(metrics)
        tracking.log_params({"best": document["params"]})
        for path in (TUNE_BEST_FILE, TRIALS_FILE, HISTORY_PLOT, IMPORTANCE_PLOT):
            mlflow.log_artifact(str(path))
        log.info("study %s: best %.4f with %s", name, document["best_value"], document["params"])
        if "baseline_seed_std" in metrics:
            log.info(
                "trial values spread %.4f (std) against %.4f between seeds of the untuned "
                "default (mean %.4f over %d seeds): the best is %.1f seed stds above that mean",
                metrics["trial_value_std"],
                metrics["baseline_seed_std"],
                metrics["baseline_seed_mean"],
                metrics["baseline_seeds"],
                metrics.get("best_over_baseline_mean_in_seed_std", float("nan")),
            )


def work(params: Params, parent_run_id: str, n_trials: int | None, worker: int) -> None:
    """One parallel worker: run trials of this stage's study under an existing parent run."""
    check_space(params)
    if n_trials is not None:
        params = params.model_copy(
            update={"tune": params.tune.model_copy(update={"n_trials": n_trials})}
        )
    tracking.use_experiment(params.dataset_name)
    params, name = tuning.study_for(params)
    tuning.optimize(params, name, parent_run_id, worker)


def worker_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.stages.tune worker")
    parser.add_argument("--parent-run-id", required=True, help="MLflow run the trials nest under")
    parser.add_argument("--n-trials", type=int, help="study budget (default: tune.n_trials)")
    parser.add_argument("--storage", help="override tune.storage (e.g. journal:optuna.journal)")
    parser.add_argument(
        "--worker", type=int, default=1, help="worker index: decides its sampler seed (>= 1)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[tune worker] %(levelname)s %(message)s")

    def job() -> None:
        if args.worker < 1:
            raise ValueError(f"--worker must be >= 1 (0 is the DVC stage), got {args.worker}")
        params = load_params()
        if args.storage:
            tune = params.tune.model_copy(update={"storage": args.storage})
            params = params.model_copy(update={"tune": tune})
        work(params, args.parent_run_id, args.n_trials, args.worker)

    return guarded("tune worker", job)


main = stage_main(STAGE, run)

if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        sys.exit(worker_main(sys.argv[2:]))
    sys.exit(main())
