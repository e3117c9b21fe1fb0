"""What every stage module shares: logging and the error contract.

A stage is ``python -m pipeline.stages.<name>``: it validates ``params.yaml``, does one job and
exits 0, or prints a one-line reason and exits 2 for bad input (ValueError, FileNotFoundError)
or 3 when MLflow tracking or the Optuna storage is unavailable (a locked database, a server
that is down).

A stage dies with the process that started it (``dvc repro``, a Prefect worker): killed, that
one cannot wait for its stage, and an orphaned stage would rewrite outputs after the next
``dvc repro`` had already run.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from pipeline.params import Params, load_params


def stage_main(stage: str, job: Callable[[Params], None]) -> Callable[[], int]:
    """Wrap ``job(params)`` as a stage entry point with logging and clean error reporting."""

    def main() -> int:
        logging.basicConfig(
            level=logging.INFO, format=f"[{stage}] %(levelname)s %(name)s: %(message)s"
        )
        return guarded(f"stage {stage}", lambda: job(load_params()))

    return main


def guarded(label: str, work: Callable[[], None]) -> int:
    """Run ``work`` as the whole of a process (a stage, a tuning worker): it dies with its
    parent, and an error becomes one line, ``<label>: error: ...``: exit 2 for bad input,
    3 for a tracking or tuning database that is unavailable."""
    die_with_parent()
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    for noisy in ("alembic", "urllib3", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # it logs each database error with its traceback; the user gets one line instead
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    from pipeline.tracking import unavailable

    try:
        work()
    except Exception as err:
        if (why := unavailable(err)) is not None:
            print(f"{label}: error: {why}", file=sys.stderr)
            return 3
        if isinstance(err, ValueError | FileNotFoundError):
            print(f"{label}: error: {err}", file=sys.stderr)
            return 2
        raise
    return 0


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (``PR_SET_PDEATHSIG``); a no-op
    elsewhere. Checked once more after the call: the parent may have died just before."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    if libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not allowed here (a sandbox): the stage runs as before
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)
