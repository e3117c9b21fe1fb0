"""Tuning workers on a real PostgreSQL server: a worker on another machine dies in a trial and
the trial is retried through Optuna's heartbeats, not left RUNNING.

The server is the OS's PostgreSQL (``/usr/lib/postgresql/<version>/bin``), installed with apt
when it is missing, started in a temporary folder on a free port and stopped at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PG_ROOT = Path("/usr/lib/postgresql")


def _server_bin() -> Path | None:
    versions = sorted(PG_ROOT.glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    return versions[-1].parent if versions else None


def _install_postgres() -> Path:
    """The server binaries, installed from the OS packages if absent (CI machines are root)."""
    found = _server_bin()
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "postgresql"]
        for command in (["apt-get", "update", "-q"], install):
            subprocess.run(command, env=env, capture_output=True, timeout=900)
        found = _server_bin()
    if found is None:
        pytest.skip("PostgreSQL is not installed and cannot be installed here (apt-get as root)")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """``postgresql://`` URL of a fresh server and database (trust auth on 127.0.0.1)."""
    pytest.importorskip("psycopg", reason="psycopg is in the dev extra")
    bin_dir = _install_postgres()
    # the server refuses to run as root: as root, run it as the OS's postgres user
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="psr-pg-"))  # not under pytest's 0700 tmp folder
    if as_user:
        shutil.chown(root, "postgres")
    data, port = root / "data", _free_port()
    log = root / "server.log"

    def pg(*command: str) -> None:
        result = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{command[0]}: {result.stdout}{result.stderr}"

    pg(str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "-E", "UTF8")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start")
    try:
        pg(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "psr")
        yield f"postgresql://postgres@127.0.0.1:{port}/psr"
    finally:
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


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
