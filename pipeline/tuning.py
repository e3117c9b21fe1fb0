"""Optuna over the train job: the study, its name and storage, the trial objective.

- A study's name is ``<prefix>-<hash of everything that decides trial results>`` (data, prior,
  SR weights, the model and train configuration a trial trains, the search settings): the same
  inputs resume the same study, anything else starts a new one. :func:`study_for` is the one
  place that computes it (the tune stage, its workers and the Prefect flow all call it).
- Each trial is the train job (:func:`psr.jobs.train.run`) with the trial's values written over
  ``train``/``model`` and the trial budget; ``train.seed`` decides its initial weights, so a
  trial does not depend on which trials ran before it in the process.
- Each worker samples with its own seed (:func:`sampler_seed`), recorded on its trials: workers
  sharing a study never propose the same values because they share a seed, and a worker that
  resumes a study does not replay the draws of the run before it.
- Crashes and parallel workers (:func:`optimize`): a trial whose worker died (SIGKILL, power
  loss) stays RUNNING in the storage, which would bias the sampler for good; the next worker on
  that host marks it FAIL with the reason and queues its values again. The budget is exact with
  any number of workers: only the first ``tune.n_trials`` trials (by number) that did not fail
  may run, a surplus trial another worker's race created is failed before it trains.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from typing import Any

import mlflow
import numpy as np
import optuna

from pipeline import identity, tracking
from pipeline.params import HeartbeatParams, Params, SearchDim
from pipeline.paths import PRIORS_FILE
from pipeline.resolve import apply_overrides, value_at, with_pretrained_weights
from pipeline.workspace import resolve_shared, shared_root
from psr.engine.config import SPEED_ONLY_FIELDS
from psr.fileio import config_digest, sha256
from psr.progress import progress_bar

COMPLETE = optuna.trial.TrialState.COMPLETE
RUNNING, FAIL = optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.FAIL
FINISHED = (COMPLETE, optuna.trial.TrialState.PRUNED)
#: Trial user attributes: the worker process (``host:pid``) and why a trial failed.
OWNER, FAIL_REASON, RETRY_OF = "owner", "fail_reason", "retry_of"
#: Trial user attribute of a seed repeat of the baseline: the train.seed it trains with.
TRAIN_SEED = "train_seed"
#: What each epoch reports to the pruner (the engine's fused validation accuracy).
OBJECTIVE = "valid_acc"
STAGE = "tune"
log = logging.getLogger(__name__)


def open_storage(
    spec: str | None, heartbeat: HeartbeatParams | None = None
) -> optuna.storages.BaseStorage:
    """``None`` -> SQLite at the repository root; ``journal:<file>`` -> JournalStorage (safe for
    parallel processes); anything else is an RDB server URL (``postgresql://...``). SQLite waits
    for a lock as long as the tracking database does (``PSR_TRACKING_LOCK_TIMEOUT_S``).

    On a server, workers may run on other machines, where :func:`fail_abandoned_trials` cannot
    see that a process died: with ``heartbeat`` (the workers' storages) each running trial
    beats, and Optuna fails a trial that stopped beating and queues its values again
    (``RetryHeartbeatStaleTrialCallback``), so the sampler never counts it RUNNING forever."""
    if spec is None:
        spec = f"sqlite:///{shared_root() / 'optuna.db'}"
    if spec.startswith("sqlite:"):
        connect = {"timeout": tracking.lock_timeout_s()}
        return optuna.storages.RDBStorage(spec, engine_kwargs={"connect_args": connect})
    if spec.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = resolve_shared(spec.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if heartbeat is None or heartbeat.interval_s is None:
        return optuna.storages.RDBStorage(spec)
    with warnings.catch_warnings():  # "experimental" since Optuna 2.8, unchanged since
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=heartbeat.max_retry)
        return optuna.storages.RDBStorage(
            spec,
            heartbeat_interval=heartbeat.interval_s,
            grace_period=heartbeat.grace_s,
            heartbeat_stale_trial_callback=retry,
        )


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


def study_name(params: Params, checksum: str) -> str:
    """``<prefix>-<hash>`` of everything that decides trial results. Not the budget, and not
    the train knobs trials replace (epochs, data fraction): changing ``train.phase1.epochs``
    reruns the DVC stage, which then finds its study complete and only rewrites the report."""
    tune = params.tune.model_dump(
        mode="json", exclude={"n_trials", "timeout_s", "storage", "study_prefix", "heartbeat"}
    )
    sr = params.model.sr_weights
    trial = trial_params(params, {})  # what a trial trains: epochs and data from the budget
    inputs = {
        "data": checksum,
        "prior": sha256(PRIORS_FILE),
        "sr_weights": sha256(sr) if isinstance(sr, str) else sr,
        "model": trial.model.model_dump(mode="json", exclude={"sr_weights"}),
        "train": trial.train.model_dump(mode="json", exclude=set(SPEED_ONLY_FIELDS)),
        "tune": tune,
    }
    return f"{params.tune.study_prefix}-{config_digest(inputs)}"


def study_for(params: Params) -> tuple[Params, str]:
    """params.yaml with the pretrained SR weights, and the name of its study."""
    from psr.data.prepared import data_checksum, read_manifest

    params = with_pretrained_weights(params)
    checksum = data_checksum(read_manifest(params.prepared_dir))
    return params, study_name(params, checksum)


def sampler_seed(base: int, worker: int, trials_before: int = 0) -> int:
    """Worker 0 (the DVC stage) of a new study samples with ``tune.seed``; worker ``i`` with a
    seed derived from ``(tune.seed, i)``, so parallel workers explore different values; a
    worker joining a study that already holds ``trials_before`` trials also mixes that in, so
    a resumed study does not draw its first values again."""
    if worker == 0 and trials_before == 0:
        return base
    entropy = [base, worker] + ([trials_before] if trials_before else [])
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def make_pruner(params: Params) -> optuna.pruners.BasePruner:
    """The ``tune.pruner``; hyperband's budget is a trial's epochs (both phases)."""
    cfg = params.tune.pruner
    if cfg.kind == "hyperband":
        epochs = params.tune.phase1_epochs + params.tune.phase2_epochs
        return optuna.pruners.HyperbandPruner(
            min_resource=min(cfg.min_epochs, epochs),
            max_resource=epochs,
            reduction_factor=cfg.reduction_factor,
        )
    if cfg.kind == "median":
        return optuna.pruners.MedianPruner(  # steps are epochs trained: never before warmup + 1
            n_startup_trials=cfg.startup_trials, n_warmup_steps=cfg.warmup_epochs + 1
        )
    return optuna.pruners.NopPruner()


def baseline_values(params: Params) -> dict[str, Any]:
    """params.yaml's own values of the search space: the untuned default as a trial."""
    return {path: value_at(params, path) for path in params.tune.space}


def open_study(params: Params, name: str, **settings: Any) -> optuna.Study:
    """Create or load study ``name`` in ``tune.storage`` (``settings``: sampler, pruner)."""
    return optuna.create_study(
        storage=open_storage(params.tune.storage, params.tune.heartbeat),
        study_name=name,
        direction="maximize",
        load_if_exists=True,
        **settings,
    )


def queue_baseline(study: optuna.Study, params: Params) -> None:
    """Queue params.yaml's untuned values as a trial, once per study (``tune.baseline_trial``),
    then ``tune.seed_repeats`` more with the next train seeds. Called by whoever starts the
    study (the DVC stage, or the psr-tune flow before its workers), never by parallel workers:
    their check-then-queue would race."""
    if params.tune.baseline_trial and "baseline_trial" not in study.user_attrs:
        values = baseline_values(params)
        study.set_user_attr("baseline_trial", values)
        study.enqueue_trial(values, skip_if_exists=True)
        for k in range(1, params.tune.seed_repeats + 1):  # the same values, other initial weights
            study.enqueue_trial(values, user_attrs={TRAIN_SEED: params.train.seed + k})


def create_study(params: Params, name: str, seed: int, worker: int = 0) -> optuna.Study:
    """Open (or create) the study; this worker samples with ``seed``, recorded on the study.
    Worker 0 (the DVC stage) queues the untuned baseline first."""
    cfg = params.tune
    study = open_study(
        params,
        name,
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.startup_trials),
        pruner=make_pruner(params),
    )
    study.set_user_attr(f"sampler_seed.worker{worker}", seed)
    if worker == 0:
        queue_baseline(study, params)
    return study


def suggest(trial: optuna.Trial, path: str, dim: SearchDim) -> Any:
    if dim.type == "categorical":
        return trial.suggest_categorical(path, dim.choices)
    if dim.type == "int":
        step = int(dim.step or 1)
        return trial.suggest_int(path, int(dim.low), int(dim.high), step=step, log=dim.log)
    return trial.suggest_float(path, dim.low, dim.high, step=dim.step, log=dim.log)


class Objective:
    """Train one configuration; report validation accuracy per epoch to the pruner."""

    def __init__(self, params: Params, study: str, parent_run_id: str, sampler_seed: int):
        self.params = params
        self.study = study
        self.parent_run_id = parent_run_id
        self.sampler_seed = sampler_seed

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr(OWNER, tracking.process_tag()[tracking.TAG_PROCESS])
        frozen = trial.study._storage.get_trial(trial._trial_id)  # system attrs: no public read
        if "failed_trial" in frozen.system_attrs:  # a heartbeat retry, recorded as a local one
            trial.set_user_attr(RETRY_OF, frozen.system_attrs["failed_trial"])
        surplus = _surplus(trial.study, trial.number, self.params.tune.n_trials)
        if surplus:
            trial.set_user_attr(FAIL_REASON, surplus)
            raise BudgetReached(surplus)
        space = self.params.tune.space
        overrides = {path: suggest(trial, path, dim) for path, dim in space.items()}
        # the untuned baseline always trains to the end: it is what the search is judged against
        prunable = overrides != trial.study.user_attrs.get("baseline_trial")
        trial.set_user_attr("sampler_seed", self.sampler_seed)
        seed = (
            {"train.seed": trial.user_attrs[TRAIN_SEED]} if TRAIN_SEED in trial.user_attrs else {}
        )
        params = trial_params(self.params, overrides | seed)
        mlflow.start_run(
            run_name=f"trial-{trial.number}",
            nested=True,
            parent_run_id=self.parent_run_id,
            tags={
                tracking.TAG_STAGE: STAGE,
                "optuna.study": self.study,
                "optuna.trial": str(trial.number),
                "optuna.sampler_seed": str(self.sampler_seed),
                **tracking.process_tag(),
                **identity.execution_tags(),  # the pipeline execution or flow run it is part of
            },
        )
        try:
            tracking.log_params(overrides | seed)
            best = self._train(trial, params, prunable)
        except optuna.TrialPruned:
            mlflow.set_tag("optuna.state", "PRUNED")
            mlflow.end_run("KILLED")
            raise
        except BaseException:
            mlflow.set_tag("optuna.state", "FAIL")
            mlflow.end_run("FAILED")
            raise
        mlflow.set_tag("optuna.state", "COMPLETE")
        mlflow.log_metric("best_valid_acc", best)
        mlflow.end_run("FINISHED")
        log.info("trial %d: %s -> %.4f", trial.number, overrides, best)
        return best

    def _train(self, trial: optuna.Trial, params: Params, prunable: bool) -> float:
        from psr.jobs import train

        log_epoch = tracking.EpochLogger()

        def report(epoch: int, metrics: dict[str, float]) -> None:
            log_epoch(epoch, metrics)
            trial.report(metrics[OBJECTIVE], epoch)  # step = epochs trained (the resource)
            if prunable and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        with tempfile.TemporaryDirectory(prefix=f"psr-trial-{trial.number}-") as out:
            result = train.run(
                params.model,
                params.train,
                params.prepared_dir,
                out,
                prior=PRIORS_FILE,
                callbacks=[report],
            )
        return result.fit.best_metric


class BudgetReached(Exception):
    """A trial beyond ``tune.n_trials`` that a race between workers created: failed unrun."""


def _surplus(study: optuna.Study, number: int, n_trials: int) -> str | None:
    """Why trial ``number`` must not run (None: it may): ``n_trials`` trials numbered before
    it are finished or running. Trial numbers are handed out atomically by the storage, so
    this is exact however many workers ask at once."""
    states = (*FINISHED, RUNNING)
    earlier = sum(t.number < number for t in study.get_trials(deepcopy=False, states=states))
    if earlier >= n_trials:
        return f"budget of {n_trials} trials reached by other workers: not run"
    return None


def _budget_left(study: optuna.Study, n_trials: int) -> int:
    return n_trials - len(study.get_trials(deepcopy=False, states=(*FINISHED, RUNNING)))


def fail_abandoned_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the RUNNING trials whose worker process on this host is gone, with the reason,
    and queue their values again (``retry_of``); the numbers of the trials failed."""
    from optuna.exceptions import UpdateFinishedTrialError

    failed = []
    storage = study._storage  # Optuna has no public call to annotate another process's trial
    for trial in study.get_trials(deepcopy=False, states=(RUNNING,)):
        owner = trial.user_attrs.get(OWNER, "")
        if not tracking.process_gone(owner):
            continue
        reason = f"worker {owner} died during the trial; its values were queued again"
        try:  # another live worker may fail it at the same time: the first one requeues
            storage.set_trial_user_attr(trial._trial_id, FAIL_REASON, reason)
            storage.set_trial_state_values(trial._trial_id, state=FAIL)
        except UpdateFinishedTrialError:
            continue
        values = trial.system_attrs.get("fixed_params") or trial.params
        if values:
            attrs = {RETRY_OF: trial.number}
            if TRAIN_SEED in trial.user_attrs:  # a seed repeat is retried with its seed
                attrs[TRAIN_SEED] = trial.user_attrs[TRAIN_SEED]
            study.enqueue_trial(values, user_attrs=attrs)
        log.warning("trial %d: %s", trial.number, reason)
        failed.append(trial.number)
    return failed


def optimize(params: Params, name: str, parent_run_id: str, worker: int = 0) -> optuna.Study:
    """Run trials until the study holds ``tune.n_trials`` finished ones (or the timeout), first
    failing (and queueing again) the trials of dead workers."""
    import time

    from psr.engine import NonFiniteLossError

    cfg = params.tune
    study = open_study(params, name)
    fail_abandoned_trials(study)
    seed = sampler_seed(cfg.seed, worker, len(study.get_trials(deepcopy=False)))
    study = create_study(params, name, seed, worker)
    if len(study.get_trials(deepcopy=False, states=FINISHED)) >= cfg.n_trials:
        log.info("study %s already holds %d finished trials", name, cfg.n_trials)
        return study
    objective = Objective(params, name, parent_run_id, seed)
    deadline = None if cfg.timeout_s is None else time.monotonic() + cfg.timeout_s
    misses = 0  # trials in a row that finished nothing (diverged, or surplus)
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    # the study's finished trials, whichever worker ran them
    bar = progress_bar(
        total=cfg.n_trials,
        initial=finished,
        desc="tune trials" + (f" (worker {worker})" if worker else ""),
        unit="trial",
        enabled=params.train.progress,
    )
    with bar:
        while _budget_left(study, cfg.n_trials) > 0:
            if deadline is not None and time.monotonic() >= deadline:
                log.info("tune.timeout_s reached")
                break
            if misses >= cfg.n_trials:
                log.warning("%d trials in a row failed: stopping (see their fail_reason)", misses)
                break
            study.optimize(objective, n_trials=1, catch=(NonFiniteLossError, BudgetReached))
            fail_abandoned_trials(study)
            before, finished = finished, len(study.get_trials(deepcopy=False, states=FINISHED))
            bar.set_postfix(best=f"{_best_value(study):.4f}", refresh=False)
            bar.update(min(finished, cfg.n_trials) - min(before, cfg.n_trials))
            misses = 0 if finished > before else misses + 1
    return study


def _best_value(study: optuna.Study) -> float:
    """The best finished trial's value so far (NaN before the first one completes)."""
    values = [t.value for t in study.get_trials(deepcopy=False, states=(COMPLETE,))]
    return max(values, default=float("nan"))


def summarize(study: optuna.Study) -> tuple[dict[str, Any], dict[str, float]]:
    """``(best-params document, metrics)`` of a study."""
    counts = {s.name.lower(): 0 for s in optuna.trial.TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] += 1
    if counts["complete"] == 0:
        raise ValueError(f"study {study.study_name}: no trial completed (all pruned or failed)")
    best = study.best_trial
    complete = study.get_trials(deepcopy=False, states=(COMPLETE,))
    untuned = study.user_attrs.get("baseline_trial", object())
    repeats = [t for t in complete if t.params == untuned and TRAIN_SEED in t.user_attrs]
    searched = [t for t in complete if t not in repeats]
    values = np.array([t.value for t in searched])
    # the first complete one: a killed worker's attempt failed
    baseline = next((t for t in searched if t.params == untuned), None)
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
        # the search's complete trials (the seed repeats of the baseline are the noise below)
        "trial_value_min": float(values.min()) if len(values) else float("nan"),
        "trial_value_max": float(values.max()) if len(values) else float("nan"),
        "trial_value_std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
    }
    if baseline is not None:
        metrics["baseline_valid_acc"] = float(baseline.value)
        metrics["best_minus_baseline"] = float(best.value - baseline.value)
        seeds = np.array([baseline.value] + [t.value for t in repeats])
        metrics["baseline_seeds"] = len(seeds)
        if len(seeds) > 1:
            noise = float(seeds.std(ddof=1))
            metrics["baseline_seed_std"] = noise
            metrics["baseline_seed_mean"] = float(seeds.mean())
            # how far the search spreads and the winner stands, in units of seed noise
            if noise > 0:
                metrics["trial_std_over_seed_std"] = metrics["trial_value_std"] / noise
                metrics["best_over_baseline_mean_in_seed_std"] = (
                    float(best.value) - float(seeds.mean())
                ) / noise
    return document, metrics
