"""Atomic outputs: a file or a folder appears complete or not at all.

Everything is written to a temporary sibling (same file system) and renamed into place, so an
interrupted run never leaves a half-written output for DVC or a reader to pick up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | Path, data: bytes | Callable[[BinaryIO], object]) -> Path:
    """Write ``data`` (bytes, or a function that writes to the open binary file) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the file
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the outputs are not secret
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def atomic_directory(target: str | Path, marker: str) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``target``; on success it replaces ``target``,
    on any failure (or interruption) it is deleted and ``target`` is left as it was.

    An existing non-empty ``target`` is only replaced when it holds ``marker`` (a file every
    earlier output of the same kind has), so a mistyped path never wipes unrelated data.
    """
    target = Path(target)
    if target.exists():
        if not target.is_dir():
            raise ValueError(f"{target} exists and is not a directory")
        if any(target.iterdir()) and not (target / marker).is_file():
            raise ValueError(f"{target} is not empty and has no {marker}: refusing to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        if old.exists() and not target.exists():
            os.replace(old, target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
