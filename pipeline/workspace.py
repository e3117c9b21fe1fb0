"""Where the pipeline runs and where its shared state lives.

DVC runs every stage with the repository root as working directory; ``dvc exp run --temp`` and
queued experiments run in a copy under ``<repo>/.dvc/tmp/exps/...``. Stage outputs belong to that
copy, but the MLflow database and the Optuna storage are shared state of the *repository*: they
resolve to the outer repository so that every experiment logs to one place.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

#: Path components of the copies DVC makes for temporary and queued experiments.
_EXP_COPY_MARKER = (".dvc", "tmp", "exps")


def workspace() -> Path:
    """The directory the stage runs in (the repository root or DVC's experiment copy)."""
    return Path.cwd().resolve()


def shared_root(path: Path | None = None) -> Path:
    """The repository that owns shared state: the outer repository of a DVC experiment copy.

    ``PSR_SHARED_ROOT`` overrides it (tests, or several checkouts sharing one database).
    """
    if os.environ.get("PSR_SHARED_ROOT"):
        return Path(os.environ["PSR_SHARED_ROOT"]).resolve()
    path = (path or workspace()).resolve()
    parts = path.parts
    for i in range(len(parts) - len(_EXP_COPY_MARKER) + 1):
        if parts[i : i + len(_EXP_COPY_MARKER)] == _EXP_COPY_MARKER:
            return Path(*parts[:i])
    return path


def resolve_shared(path: str | Path) -> Path:
    """An absolute path: relative paths are taken from :func:`shared_root`."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else shared_root() / path


def git_commit(cwd: Path | None = None) -> str | None:
    """The current git commit (None outside a git repository or before the first commit)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or workspace(),
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
