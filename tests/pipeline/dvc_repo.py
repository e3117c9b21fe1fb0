"""A throwaway copy of the repository with git and DVC, a way to run the tools in it, and
servers in the background on free loopback ports: the end-to-end tests' setup, shared by the
tests that need the real DVC or a real server (loaded by conftest.py)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of the tools: this venv first, no tracking/Prefect servers inherited."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_", "PREFECT_", "PSR_", "DVC_", "GIT_"))
    }
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        DVC_NO_ANALYTICS="1",
        NO_ALBUMENTATIONS_UPDATE="1",
        DO_NOT_TRACK="1",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        GIT_AUTHOR_NAME="psr-test",
        GIT_AUTHOR_EMAIL="psr-test@example.invalid",
        GIT_COMMITTER_NAME="psr-test",
        GIT_COMMITTER_EMAIL="psr-test@example.invalid",
    )
    env.update(extra)
    return env


def run(command: list[str], cwd: Path, timeout: float = 900, **env: str):
    """Run a tool; on failure show its output in the assertion message."""
    result = subprocess.run(
        command, cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, (
        f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-6000:]}\n"
        f"{result.stderr[-6000:]}"
    )
    return result


def copy_repository(dest: Path, assignments: list[str], space: dict | None = None) -> Path:
    """Tracked and untracked-but-not-ignored files of the repo (no outputs, no dvc.lock), the
    parameters edited, committed in a fresh git repository with DVC initialised."""
    from pipeline.params import set_params

    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if name.endswith("dvc.lock") or not source.is_file() or name.startswith(".dvc/tmp"):
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    set_params(dest / "params.yaml", assignments)
    if space is not None:  # dotted keys: not reachable through set_params
        data = yaml.safe_load((dest / "params.yaml").read_text())
        data["tune"]["space"] = space
        (dest / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    run(["git", "init", "-q"], dest)
    if not (dest / ".dvc" / "config").is_file():
        run([str(BIN / "dvc"), "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-q", "-m", "test copy"], dest)
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def background(command: list[str], cwd: Path, log: Path, **env: str):
    """A server process in its own process group, stopped (TERM, then KILL) on exit."""
    with open(log, "w") as out:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=clean_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            if process.poll() is not None:
                break
            os.killpg(process.pid, sig)
            try:
                process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue


def wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited ({process.returncode}):\n{log.read_text()[-4000:]}")
        try:
            if requests.get(url, timeout=5).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    pytest.fail(f"{url} did not answer in {timeout} s:\n{log.read_text()[-4000:]}")
