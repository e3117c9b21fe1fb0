"""A throwaway copy of the repository with git and DVC, and a way to run the tools in it: the
end-to-end tests' setup, shared by the tests that need the real DVC (loaded by conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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
