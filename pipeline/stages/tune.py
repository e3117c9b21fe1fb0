"""Stage ``tune``: Optuna search over ``tune.space``; writes the best values for ``train``.

- The study lives in ``tune.storage`` (default: SQLite ``optuna.db`` at the repository root, not
  a DVC output, so DVC never deletes it). Its name is ``<prefix>-<hash of its inputs>``: the
  same data, prior, SR weights, model, train and search settings resume the same study
  (``load_if_exists``), anything else starts a new one. ``tune.n_trials`` is the number of
  finished (complete or pruned) trials the study must hold: an interrupted run continues where it
  stopped, and parallel workers (the ``psr-tune`` Prefect flow, JournalStorage) share the budget.
- Seeded TPE sampler; MedianPruner fed with validation accuracy after every epoch.
- Each trial is an MLflow run nested under this stage's run (``parent_run_id`` crosses processes).

``python -m pipeline.stages.tune`` is the DVC stage; ``python -m pipeline.stages.tune worker
--parent-run-id ID`` only runs trials (what the parallel workers do).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pandas as pd

from pipeline import tracking
from pipeline.params import Params, SearchDim, TuneParams, load_params
from pipeline.stages.common import report_dir, run_record_path, stage_main
from pipeline.training import (
    PRIORS_FILE,
    apply_overrides,
    build_network,
    check_space,
    config_digest,
    file_digest,
    load_prior,
    with_sr_weights,
)
from pipeline.workspace import resolve_shared, shared_root, write_json_atomic

STAGE = "tune"
BEST_FILE = report_dir(STAGE) / "best_params.json"
METRICS_FILE = report_dir(STAGE) / "metrics.json"
TRIALS_FILE = report_dir(STAGE) / "trials.csv"
HISTORY_PLOT = report_dir(STAGE) / "optimization_history.png"
IMPORTANCE_PLOT = report_dir(STAGE) / "param_importances.png"
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
#: What each epoch reports to the pruner (the engine's fused validation accuracy).
OBJECTIVE = "valid_acc"
#: TrainConfig fields that change speed, not results: they do not name a new study.
RUNTIME_FIELDS = {
    "workers",
    "pin_memory",
    "persistent_workers",
    "prefetch_factor",
    "progress",
    "device",
    "cudnn_benchmark",
}
log = logging.getLogger(__name__)


def open_storage(spec: str | None) -> str | optuna.storages.BaseStorage:
    """``None`` -> SQLite at the repository root; ``journal:<file>`` -> JournalStorage (safe for
    parallel processes); anything else is an RDB URL (``postgresql://...``)."""
    if spec is None:
        return f"sqlite:///{shared_root() / 'optuna.db'}"
    if spec.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = resolve_shared(spec.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    return spec


def study_name(params: Params, data_checksum: str) -> str:
    """``<prefix>-<hash>`` of everything that decides trial results. Not the budget, and not
    the train knobs trials replace (epochs, data fraction): changing ``train.phase1.epochs``
    reruns the DVC stage, which then finds its study complete and only rewrites the report."""
    tune = params.tune.model_dump(
        mode="json", exclude={"n_trials", "timeout_s", "storage", "study_prefix"}
    )
    sr = params.model.sr_weights
    trial = trial_params(params, {})  # what a trial trains: epochs and data from the budget
    inputs = {
        "data": data_checksum,
        "prior": file_digest(PRIORS_FILE),
        "sr_weights": file_digest(Path(sr)) if sr else None,
        "model": trial.model.model_dump(mode="json", exclude={"sr_weights"}),
        "train": trial.train.model_dump(mode="json", exclude=RUNTIME_FIELDS),
        "tune": tune,
    }
    return f"{params.tune.study_prefix}-{config_digest(inputs)}"


def create_study(params: Params, name: str) -> optuna.Study:
    cfg = params.tune
    return optuna.create_study(
        storage=open_storage(cfg.storage),
        study_name=name,
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=cfg.startup_trials),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=cfg.pruner.startup_trials, n_warmup_steps=cfg.pruner.warmup_epochs
        ),
    )


def suggest(trial: optuna.Trial, path: str, dim: SearchDim) -> Any:
    if dim.type == "categorical":
        return trial.suggest_categorical(path, dim.choices)
    if dim.type == "int":
        step = int(dim.step or 1)
        return trial.suggest_int(path, int(dim.low), int(dim.high), step=step, log=dim.log)
    return trial.suggest_float(path, dim.low, dim.high, step=dim.step, log=dim.log)


def trial_params(params: Params, overrides: dict[str, Any]) -> Params:
    """The configuration one trial trains: tuned values, the trial budget, quiet output."""
    cfg = params.tune
    budget = {
        "train.phase1.epochs": cfg.phase1_epochs,
        "train.phase2.epochs": cfg.phase2_epochs,
        "train.data_fraction": cfg.data_fraction,
        "train.progress": False,
        "train.early_stopping": None,
    }
    return apply_overrides(params, {**budget, **overrides})


class Objective:
    """Train one configuration; report validation accuracy per epoch; prune below the median."""

    def __init__(self, params: Params, study: str, parent_run_id: str):
        from psr.data.prepared import load_split

        self.params = params
        self.study = study
        self.parent_run_id = parent_run_id
        self.train = load_split(params.prepared_dir, "train")
        self.valid = load_split(params.prepared_dir, "valid")
        self.prior = load_prior(self.train.class_names)

    def __call__(self, trial: optuna.Trial) -> float:
        from psr.engine import fit

        space = self.params.tune.space
        overrides = {path: suggest(trial, path, dim) for path, dim in space.items()}
        params = trial_params(self.params, overrides)
        model = build_network(params, self.train.class_names)
        mlflow.start_run(
            run_name=f"trial-{trial.number}",
            nested=True,
            parent_run_id=self.parent_run_id,
            tags={
                tracking.TAG_STAGE: STAGE,
                "optuna.study": self.study,
                "optuna.trial": str(trial.number),
            },
        )
        try:
            tracking.log_params(overrides)
            log_epoch = tracking.epoch_logger()

            def report(epoch: int, metrics: dict[str, float]) -> None:
                log_epoch(epoch, metrics)
                trial.report(metrics[OBJECTIVE], epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned after epoch {epoch}")

            with tempfile.TemporaryDirectory(prefix=f"psr-trial-{trial.number}-") as out:
                result = fit(
                    model,
                    self.train,
                    self.valid,
                    params.train,
                    out,
                    prior=self.prior,
                    callbacks=[report],
                )
        except optuna.TrialPruned:
            mlflow.set_tag("optuna.state", "PRUNED")
            mlflow.end_run("KILLED")
            raise
        except BaseException:
            mlflow.set_tag("optuna.state", "FAIL")
            mlflow.end_run("FAILED")
            raise
        mlflow.set_tag("optuna.state", "COMPLETE")
        mlflow.log_metric("best_valid_acc", result.best_metric)
        mlflow.end_run("FINISHED")
        log.info("trial %d: %s -> %.4f", trial.number, overrides, result.best_metric)
        return result.best_metric


def optimize(params: Params, study: optuna.Study, parent_run_id: str) -> None:
    """Run trials until the study holds ``tune.n_trials`` finished ones (or the timeout)."""
    from psr.engine import NonFiniteLossError

    cfg: TuneParams = params.tune
    remaining = cfg.n_trials - len(study.get_trials(deepcopy=False, states=FINISHED))
    if remaining <= 0:
        log.info("study %s already holds %d finished trials", study.study_name, cfg.n_trials)
        return
    study.optimize(
        Objective(params, study.study_name, parent_run_id),
        n_trials=remaining,
        timeout=cfg.timeout_s,
        catch=(NonFiniteLossError,),
        callbacks=[optuna.study.MaxTrialsCallback(cfg.n_trials, states=FINISHED)],
    )


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


def summarize(study: optuna.Study) -> tuple[dict[str, Any], dict[str, float]]:
    """``(best-params document, metrics)`` of a study."""
    counts = {s.name.lower(): 0 for s in optuna.trial.TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] += 1
    if counts["complete"] == 0:
        raise ValueError(f"study {study.study_name}: no trial completed (all pruned or failed)")
    best = study.best_trial
    document = {
        "enabled": True,
        "study": study.study_name,
        "best_trial": best.number,
        "best_value": best.value,
        "objective": OBJECTIVE,
        "params": best.params,
    }
    metrics = {
        "best_valid_acc": float(best.value),
        "trials_complete": counts["complete"],
        "trials_pruned": counts["pruned"],
        "trials_failed": counts["fail"],
    }
    return document, metrics


def run(params: Params) -> None:
    from psr.data.prepared import read_manifest

    manifest = read_manifest(params.prepared_dir)
    params = with_sr_weights(params)
    check_space(params)
    report_dir(STAGE).mkdir(parents=True, exist_ok=True)
    with tracking.stage_run(
        STAGE,
        params.dataset_name,
        params={"tune": params.tune.model_dump(mode="json")},
        record=run_record_path(STAGE),
        manifest=manifest,
    ) as run:
        if not params.tune.enabled:
            write_json_atomic(BEST_FILE, {"enabled": False, "params": {}})
            write_json_atomic(METRICS_FILE, {})
            pd.DataFrame(columns=["number", "state", "value"]).to_csv(TRIALS_FILE, index=False)
            write_plots(None)
            mlflow.set_tag("psr.tune", "disabled")
            return
        name = study_name(params, tracking.data_checksum(manifest))
        mlflow.set_tag("optuna.study", name)
        study = create_study(params, name)
        optimize(params, study, run.info.run_id)
        document, metrics = summarize(study)
        write_json_atomic(BEST_FILE, document)
        write_json_atomic(METRICS_FILE, metrics)
        study.trials_dataframe().to_csv(TRIALS_FILE, index=False)
        write_plots(study)
        mlflow.log_metrics(metrics)
        tracking.log_params({"best": document["params"]})
        for path in (BEST_FILE, TRIALS_FILE, HISTORY_PLOT, IMPORTANCE_PLOT):
            mlflow.log_artifact(str(path))
        log.info("study %s: best %.4f with %s", name, document["best_value"], document["params"])


def work(params: Params, parent_run_id: str, n_trials: int | None) -> None:
    """One parallel worker: run trials of this stage's study under an existing parent run."""
    from psr.data.prepared import read_manifest

    manifest = read_manifest(params.prepared_dir)
    params = with_sr_weights(params)
    check_space(params)
    if n_trials is not None:
        params = params.model_copy(
            update={"tune": params.tune.model_copy(update={"n_trials": n_trials})}
        )
    tracking.use_experiment(params.dataset_name)
    name = study_name(params, tracking.data_checksum(manifest))
    optimize(params, create_study(params, name), parent_run_id)


def worker_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.stages.tune worker")
    parser.add_argument("--parent-run-id", required=True, help="MLflow run the trials nest under")
    parser.add_argument("--n-trials", type=int, help="study budget (default: tune.n_trials)")
    parser.add_argument("--storage", help="override tune.storage (e.g. journal:optuna.journal)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[tune worker] %(levelname)s %(message)s")
    try:
        params = load_params()
        if args.storage:
            tune = params.tune.model_copy(update={"storage": args.storage})
            params = params.model_copy(update={"tune": tune})
        work(params, args.parent_run_id, args.n_trials)
    except (ValueError, FileNotFoundError) as err:
        print(f"tune worker: error: {err}", file=sys.stderr)
        return 2
    return 0


main = stage_main(STAGE, run)

if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        sys.exit(worker_main(sys.argv[2:]))
    sys.exit(main())
