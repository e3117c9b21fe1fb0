"""Real servers for the integration tests: free ports, background processes that answer a health
URL, an MLflow tracking server (started as ``make mlflow-server`` starts it) and PostgreSQL.

Every server binds 127.0.0.1 on a free port and runs in its own process group, so that one
``killpg`` stops it with its workers.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

PG_ROOT = Path("/usr/lib/postgresql")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], log: Path, env: dict[str, str], cwd: Path | None = None):
    """``command`` in its own process group, its output in ``log``."""
    with open(log, "w") as out:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen) -> None:
    """TERM the process group, KILL it if it has not ended in 20 s."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        if process.poll() is not None:
            return
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def background(command: list[str], cwd: Path, log: Path, env: dict[str, str]):
    """A server process (:func:`start`), stopped on exit (:func:`stop`)."""
    process = start(command, log, env, cwd)
    try:
        yield process
    finally:
        stop(process)


def wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    """Until ``url`` answers 2xx; the test fails with the log's tail if the process exits or
    the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited ({process.returncode}):\n{log.read_text()[-4000:]}")
        try:
            if requests.get(url, timeout=5).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer in {timeout} s:\n{log.read_text()[-4000:]}")


def mlflow_server(store: Path, port: int, env: dict[str, str]) -> subprocess.Popen:
    """``python -m pipeline.mlflow_server`` (``make mlflow-server``) with one worker, its
    SQLite database and proxied artifacts under ``store`` (``server.db``,
    ``server-artifacts/``), answering /health; its log is ``store/mlflow-server-<port>.log``."""
    command = [sys.executable, "-m", "pipeline.mlflow_server", "--port", str(port)]
    command += ["--workers", "1", "--backend", f"sqlite:///{store / 'server.db'}"]
    command += ["--artifacts", str(store / "server-artifacts")]
    log = store / f"mlflow-server-{port}.log"
    server = start(command, log, env, cwd=store)
    try:
        wait_for(f"http://127.0.0.1:{port}/health", server, log, timeout=120)
    except BaseException:
        stop(server)
        raise
    return server


def _postgres_bin() -> Path | None:
    versions = sorted(PG_ROOT.glob("*/bin/postgres"), key=lambda p: int(p.parts[-3]))
    return versions[-1].parent if versions else None


def _install_postgres() -> Path:
    """The server binaries, installed from the OS packages if absent (CI machines are root)."""
    found = _postgres_bin()
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "postgresql"]
        for command in (["apt-get", "update", "-q"], install):
            subprocess.run(command, env=env, capture_output=True, timeout=900)
        found = _postgres_bin()
    if found is None:
        pytest.skip("PostgreSQL is not installed and cannot be installed here (apt-get as root)")
    return found


@contextmanager
def postgres(database: str = "psr") -> Iterator[str]:
    """``postgresql://`` URL of a fresh server (the OS's PostgreSQL, trust auth on 127.0.0.1)
    and database, stopped and deleted on exit."""
    bin_dir = _install_postgres()
    # the server refuses to run as root: as root, run it as the OS's postgres user
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="psr-pg-"))  # not under pytest's 0700 tmp folder
    if as_user:
        shutil.chown(root, "postgres")
    data, port = root / "data", free_port()
    log = root / "server.log"

    def pg(*command: str) -> None:
        result = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{command[0]}: {result.stdout}{result.stderr}"

    pg(str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres", "-E", "UTF8")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
    pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start")
    try:
        createdb = [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres"]
        pg(*createdb, database)
        yield f"postgresql://postgres@127.0.0.1:{port}/{database}"
    finally:
        subprocess.run(
            [*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)
