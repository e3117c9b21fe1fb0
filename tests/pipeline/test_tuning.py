"""The tuning rules that need no training: sampler seeds, the exact budget, dead workers."""

from __future__ import annotations

import optuna
import pytest

from pipeline import tracking, tuning


def test_sampler_seeds_differ_per_worker_and_per_resume():
    assert tuning.sampler_seed(7, 0) == 7  # a new study: tune.seed, reproducible
    seeds = {tuning.sampler_seed(7, w, before) for w in (0, 1, 2) for before in (0, 3, 5)}
    assert len(seeds) == 9  # a resumed study does not replay the first draws


def _study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="maximize")


def test_only_the_first_n_trials_by_number_may_run():
    study = _study()
    first = study.ask()
    second = study.ask()
    third = study.ask()
    study.tell(first, state=optuna.trial.TrialState.FAIL)  # failed: frees its place
    assert tuning._surplus(study, second.number, 2) is None
    assert tuning._surplus(study, third.number, 2) is None
    fourth = study.ask()
    assert "budget of 2 trials reached" in tuning._surplus(study, fourth.number, 2)
    assert tuning._budget_left(study, 2) == -1  # nobody asks for another


def test_trials_of_dead_workers_fail_with_the_reason_and_are_queued_again():
    study = _study()
    me = tracking.process_tag()[tracking.TAG_PROCESS]
    host = me.rpartition(":")[0]
    dead, alive, elsewhere = study.ask(), study.ask(), study.ask()
    for trial, owner in (
        (dead, f"{host}:999999999"),
        (alive, me),
        (elsewhere, "another-host:1"),  # cannot be judged from here
    ):
        trial.suggest_float("x", 0, 1)
        trial.set_user_attr(tuning.OWNER, owner)
    assert tuning.fail_abandoned_trials(study) == [dead.number]
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["FAIL", "RUNNING", "RUNNING", "WAITING"]
    assert "died during the trial" in trials[0].user_attrs[tuning.FAIL_REASON]
    retry = study.ask()  # the queued values come first
    assert retry.suggest_float("x", 0, 1) == trials[0].params["x"]
    assert retry.user_attrs[tuning.RETRY_OF] == 0
    assert tuning.fail_abandoned_trials(study) == []


@pytest.mark.parametrize("owner", ["", "no-pid-here"])
def test_trials_without_a_known_owner_are_left_alone(owner):
    study = _study()
    trial = study.ask()
    if owner:
        trial.set_user_attr(tuning.OWNER, owner)
    assert tuning.fail_abandoned_trials(study) == []


def test_a_study_whose_every_trial_diverges_stops(tmp_path, monkeypatch):
    """Failed trials free their place in the budget; n_trials failures in a row end the run
    instead of retrying forever."""
    from pathlib import Path

    from pipeline.params import load_params
    from psr.engine import NonFiniteLossError

    params = load_params(Path(__file__).resolve().parents[2] / "params.yaml")
    cfg = params.tune.model_copy(
        update={"storage": f"journal:{tmp_path / 'j.journal'}", "n_trials": 3}
    )
    params = params.model_copy(update={"tune": cfg})
    calls = []

    class Diverges:
        def __init__(self, *args):
            pass

        def __call__(self, trial):
            calls.append(trial.number)
            raise NonFiniteLossError("loss is nan")

    monkeypatch.setattr(tuning, "Objective", Diverges)
    study = tuning.optimize(params, "diverging", "parent-run")
    assert len(calls) == 3
    assert {t.state.name for t in study.get_trials()} == {"FAIL"}
