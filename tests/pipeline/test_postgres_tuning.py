"""Tuning workers on a real PostgreSQL server: a worker on another machine dies in a trial and
the trial is retried through Optuna's heartbeats, not left RUNNING.

The server is the OS's PostgreSQL (``/usr/lib/postgresql/<version>/bin``), installed with apt
when it is missing, started in a temporary folder on a free port and stopped at the end
(``servers.postgres``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import servers

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def postgres_url():
    """``postgresql://`` URL of a fresh server and database (trust auth on 127.0.0.1)."""
    pytest.importorskip("psycopg", reason="psycopg is in the dev extra")
    with servers.postgres() as url:
        yield url


def _another_host() -> list[str]:
    """A command prefix that runs a process under another host name (a UTS namespace), so its
    trials look as if a worker on another machine owned them."""
    probe = subprocess.run(["unshare", "--uts", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot give a worker another host name (unshare --uts): {probe.stderr!r}")
    return ["unshare", "--uts", "sh", "-c", 'hostname other-machine && exec "$@"', "sh"]


def test_a_dead_remote_workers_trial_is_retried_through_heartbeats(
    workspace, run_tune_workers, stage, postgres_url
):
    """Worker 1 ("other-machine") is killed in a trial; this host cannot tell whether
    that process lives, so the trial stays RUNNING until its heartbeat is stale. The tune stage
    then fails it through Optuna's heartbeat check, retries its values and fills the budget."""
    import optuna

    from pipeline import tuning
    from pipeline.params import load_params, set_params

    params_file = workspace / "params.yaml"
    original = params_file.read_text()
    heartbeat = ["tune.heartbeat.interval_s=1", "tune.heartbeat.grace_s=3"]
    set_params(params_file, ["tune.n_trials=3", f"tune.storage={postgres_url}", *heartbeat])
    try:
        done = run_tune_workers([{"PSR_FAILPOINT": "train.step:5"}], {1: _another_host()})
        assert [code for code, _ in done] == [-signal.SIGKILL], done[0][1][-3000:]
        os.chdir(workspace)
        params = load_params()
        _, name = tuning.study_for(params)
        storage = tuning.open_storage(params.tune.storage)
        trials = optuna.load_study(study_name=name, storage=storage).get_trials()
        (dead,) = [t for t in trials if t.state.name == "RUNNING"]
        assert dead.user_attrs[tuning.OWNER].startswith("other-machine:")
        study = optuna.load_study(study_name=name, storage=storage)
        assert tuning.fail_abandoned_trials(study) == []  # not this host's process
        time.sleep(4)  # past the grace period: no heartbeat from the dead worker since
        result = stage("tune")
        assert result.returncode == 0, result.stderr[-4000:]
        trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    finally:
        os.chdir(Path(__file__).resolve().parents[2])
        params_file.write_text(original)
    assert trials[dead.number].state.name == "FAIL"
    (retry,) = [t for t in trials if t.user_attrs.get(tuning.RETRY_OF) == dead.number]
    assert retry.state.name == "COMPLETE" and retry.params == dead.params
    assert len([t for t in trials if t.state in tuning.FINISHED]) == 3
    assert not [t for t in trials if t.state.name == "RUNNING"]
