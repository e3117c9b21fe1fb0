"""Failpoints: named places where a test makes the process die as abruptly as a power cut.

``failpoint("train.step")`` does nothing unless the environment variable ``PSR_FAILPOINT``
names that point: ``PSR_FAILPOINT=train.step`` kills the process (SIGKILL, to itself) the first
time it gets there, ``train.step:5`` the fifth time. No cleanup handler, ``finally`` block or
atexit hook runs, exactly as when the machine loses power, so the fault-injection tests
(``tests/pipeline/test_faults.py``) prove what survives a real crash at that point.
docs/reliability.md lists the points.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "PSR_FAILPOINT"
_reached: Counter[str] = Counter()


def failpoint(name: str) -> None:
    """Die here if ``PSR_FAILPOINT`` is ``name`` (or ``name:N`` and this is the N-th time)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
