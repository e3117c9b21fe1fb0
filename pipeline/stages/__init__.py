"""The DVC stages, one module each: ``python -m pipeline.stages.<name>``."""

import os

# Set before torch loads OpenMP. On a shared CPU, OpenMP threads that spin while waiting for a
# preempted sibling make torch many times slower (measured: 9x with one competing process on 2
# cores); sleeping waits cost next to nothing when the cores are free.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
