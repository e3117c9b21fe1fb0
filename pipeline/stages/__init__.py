"""The DVC stages, one module each: ``python -m pipeline.stages.<name>``."""

import os
import sys

# Set before torch loads OpenMP. On a shared CPU, OpenMP threads that spin while waiting for a
# preempted sibling make torch many times slower (measured: 9x with one competing process on 2
# cores); sleeping waits cost next to nothing when the cores are free.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _started_stage(argv: list[str]) -> str | None:
    """The stage ``argv`` runs (``python -m pipeline.stages.<name> ...``), else None."""
    if "-m" not in argv[:-1]:
        return None
    module = argv[argv.index("-m") + 1]
    prefix = f"{__name__}."
    return module.removeprefix(prefix) if module.startswith(prefix) else None


# A stage module imports torch and MLflow before its first line of output (seconds): say that
# the stage has started before those imports, once, from the package they all load first (not
# again in each torchrun worker of the train stage, which torchrun gives a RANK).
if (_stage := _started_stage(sys.orig_argv)) is not None and "RANK" not in os.environ:
    print(f"stage {_stage}: starting (loading torch, MLflow)", file=sys.stderr, flush=True)
