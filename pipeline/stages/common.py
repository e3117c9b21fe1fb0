"""What every stage module shares: logging and the error contract.

A stage is ``python -m pipeline.stages.<name>``: it validates ``params.yaml``, does one job and
exits 0, or prints a one-line reason and exits 2 for bad input (ValueError, FileNotFoundError)
or 3 when MLflow tracking is unavailable (a locked database, a server that is down).

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
        die_with_parent()
        os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
        logging.basicConfig(
            level=logging.INFO, format=f"[{stage}] %(levelname)s %(name)s: %(message)s"
        )
        for noisy in ("alembic", "urllib3", "matplotlib", "PIL"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        # it logs each database error with its traceback; the user gets one line instead
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        from mlflow.exceptions import MlflowException
        from sqlalchemy.exc import OperationalError

        from pipeline.tracking import explain_failure

        try:
            job(load_params())
        except (MlflowException, OperationalError) as err:
            print(f"stage {stage}: error: {explain_failure(err)}", file=sys.stderr)
            return 3
        except (ValueError, FileNotFoundError) as err:
            print(f"stage {stage}: error: {err}", file=sys.stderr)
            return 2
        return 0

    return main


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
