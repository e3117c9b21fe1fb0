"""Seeds decide everything: the stages run twice on the same params give the same bytes, and
parallel tuning workers never propose the same values. Runs the stage functions in a temporary
workspace (real MLflow on SQLite, real Optuna), without DVC."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)
    return state.get("state_dict", state)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_stage_twice_gives_identical_best_pt(workspace, monkeypatch):
    from pipeline.params import load_params
    from pipeline.paths import CHECKPOINT
    from pipeline.stages import train

    monkeypatch.chdir(workspace)
    params = load_params()
    train.run(params)
    first = _tensors(CHECKPOINT)
    torch.manual_seed(1234)  # the stage must not depend on the process's RNG state
    train.run(params)
    assert _same(first, _tensors(CHECKPOINT))
    reseeded = params.model_copy(update={"train": params.train.model_copy(update={"seed": 5})})
    train.run(reseeded)
    assert not _same(first, _tensors(CHECKPOINT))


def test_sr_pretrain_stage_twice_gives_identical_weights(workspace, monkeypatch):
    from pipeline.params import load_params
    from pipeline.paths import SR_DIR
    from pipeline.stages import sr_pretrain

    monkeypatch.chdir(workspace)
    first = _tensors(SR_DIR / "sr_x2.pt")
    sr_pretrain.run(load_params())
    assert _same(first, _tensors(SR_DIR / "sr_x2.pt"))


def test_tune_stage_twice_gives_identical_trials(workspace, monkeypatch):
    """Two fresh studies of the same params: the same trial values and results, in order."""
    import optuna

    from pipeline import tuning
    from pipeline.params import load_params
    from pipeline.stages import tune

    monkeypatch.chdir(workspace)
    params = load_params()
    runs = []
    for storage in ("journal:first.journal", "journal:second.journal"):
        cfg = params.tune.model_copy(update={"storage": storage, "n_trials": 3})
        tune.run(params.model_copy(update={"tune": cfg}))
        _, name = tuning.study_for(params)
        study = optuna.load_study(study_name=name, storage=tuning.open_storage(storage))
        runs.append([(t.params, t.value, t.state) for t in study.get_trials()])
    assert len(runs[0]) == 3 and runs[0] == runs[1]


def test_two_tune_workers_never_propose_the_same_values(workspace, run_tune_workers):
    """Two worker processes on one JournalStorage study (what the psr-tune flow starts)."""
    import optuna

    from pipeline import tuning
    from pipeline.params import load_params

    done = run_tune_workers([{}, {}])
    assert [code for code, _ in done] == [0, 0], "\n".join(out for _, out in done)
    os.chdir(workspace)
    try:
        params = load_params()
        _, name = tuning.study_for(params)
        study = optuna.load_study(study_name=name, storage=tuning.open_storage(params.tune.storage))
    finally:
        os.chdir(REPO)
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in tuning.FINISHED]
    assert len(finished) == params.tune.n_trials  # exact, however the workers raced
    trials = [t for t in trials if t.state != optuna.trial.TrialState.FAIL]  # surplus: unrun
    values = [tuple(sorted(t.params.items())) for t in trials]
    assert len(values) >= 4
    assert len(set(values)) == len(values), values
    seeds = {t.user_attrs["sampler_seed"] for t in trials}
    assert len(seeds) == 2 and params.tune.seed not in seeds


def test_hyperband_study_starts_from_the_untuned_default(workspace, monkeypatch):
    """Trial 0 is params.yaml's own values and trial 1 the same with the next train seed, never
    pruned; the report says how far the search spread against that seed noise and whether it
    beat the default; the pruner is Hyperband over epochs."""
    import optuna

    from pipeline import tuning
    from pipeline.params import load_params
    from pipeline.paths import report_dir
    from pipeline.stages import tune

    monkeypatch.chdir(workspace)
    params = load_params()
    pruner = params.tune.pruner.model_copy(update={"kind": "hyperband"})
    cfg = params.tune.model_copy(
        update={
            "storage": "journal:hyperband.journal",
            "n_trials": 4,
            "phase1_epochs": 3,
            "pruner": pruner,
            "seed_repeats": 1,
        }
    )
    params = params.model_copy(update={"tune": cfg})
    assert params.tune.baseline_trial
    cfg_seed = params.train.seed
    hyperband = tuning.make_pruner(params)
    assert isinstance(hyperband, optuna.pruners.HyperbandPruner)
    assert (hyperband._min_resource, hyperband._max_resource) == (1, 3)
    tune.run(params)
    _, name = tuning.study_for(params)
    study = optuna.load_study(study_name=name, storage=tuning.open_storage(cfg.storage))
    trials = study.get_trials()
    baseline = tuning.baseline_values(params)
    assert baseline["train.phase1.lrs.1"] == params.train.phase1.lrs[1]
    assert trials[0].params == baseline and trials[0].state == optuna.trial.TrialState.COMPLETE
    assert trials[0].last_step == 3  # trained to the end
    repeat = trials[1]
    assert repeat.params == baseline and repeat.user_attrs[tuning.TRAIN_SEED] == cfg_seed + 1
    assert repeat.state == optuna.trial.TrialState.COMPLETE and repeat.last_step == 3
    assert repeat.value != trials[0].value  # other initial weights
    assert all(t.params != baseline for t in trials[2:])
    metrics = json.loads((report_dir("tune") / "metrics.json").read_text())
    complete = optuna.trial.TrialState.COMPLETE
    values = [t.value for t in trials if t.state == complete and t.number != 1]
    assert metrics["trial_value_max"] == pytest.approx(max(values))
    assert metrics["baseline_valid_acc"] == pytest.approx(trials[0].value)
    best = max(t.value for t in trials if t.state == complete)
    assert metrics["best_minus_baseline"] == pytest.approx(best - trials[0].value)
    seeds = [trials[0].value, repeat.value]
    assert metrics["baseline_seeds"] == 2
    assert metrics["baseline_seed_std"] == pytest.approx(abs(seeds[0] - seeds[1]) / 2**0.5)
    assert metrics["trial_std_over_seed_std"] == pytest.approx(
        metrics["trial_value_std"] / metrics["baseline_seed_std"]
    )
