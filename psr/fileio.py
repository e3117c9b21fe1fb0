"""Atomic outputs, and the few file helpers every layer shares.

Everything is written to a temporary sibling (same file system) and renamed into place, so an
interrupted run never leaves a half-written output for DVC or a reader to pick up. A sibling's
name carries its writer's host and pid (``.<name>.tmp-<host>-<pid>-...``): the next write of the
same output deletes the ones a killed process left.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from psr.faults import failpoint


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24] or "host"


def _scratch_prefix(target: Path, kind: str) -> str:
    """The name start of a temporary sibling of ``target`` this process makes."""
    return f".{target.name}.{kind}-{_host()}-{os.getpid()}-"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_abandoned(target: str | Path) -> list[Path]:
    """Delete the temporary siblings of ``target`` whose writer (a process of this machine) is
    gone: what a killed run left. A writer killed while it swapped folders may have left no
    ``target`` but the previous one set aside: that one is put back. Returns what was deleted."""
    target = Path(target)
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(tmp|old)-([A-Za-z0-9]+)-(\d+)-")
    removed = []
    abandoned = [
        (found[1], sibling)
        for sibling in (sorted(target.parent.iterdir()) if target.parent.is_dir() else ())
        if (found := pattern.match(sibling.name))
        and found[2] == _host()
        and not pid_alive(int(found[3]))
    ]
    for kind, sibling in abandoned:
        if kind == "old" and not target.exists():
            os.replace(sibling, target)
            continue
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            sibling.unlink(missing_ok=True)
        removed.append(sibling)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for a writer that needs a file name (a memory
    map, ONNX); on success it is synced and renamed to ``path``, on failure deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned(path)
    fd, name = tempfile.mkstemp(prefix=_scratch_prefix(path, "tmp"), dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # on disk before the rename makes it the file
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the outputs are not secret
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(
    path: str | Path,
    data: bytes | Callable[[BinaryIO], object],
    *,
    verify: Callable[[Path], object] | None = None,
) -> Path:
    """Write ``data`` (bytes, or a function that writes to the open binary file) to ``path``.

    ``verify(tmp_path)`` runs on the complete temporary file before it replaces ``path``: an
    exception it raises leaves ``path`` as it was (a download that fails validation)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
        if verify is not None:
            verify(tmp)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """``text`` (UTF-8) to ``path``, atomically."""
    return atomic_write(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Any) -> Path:
    """``data`` as indented, key-sorted JSON, atomically."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any:
    """A JSON file; missing or malformed files are errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (run the step that writes it first)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: invalid JSON: {err}") from err


def config_digest(data: Any) -> str:
    """A short stable hash of JSON-able data (names a study, an ablation)."""
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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
    remove_abandoned(target)
    tmp = Path(tempfile.mkdtemp(prefix=_scratch_prefix(target, "tmp"), dir=target.parent))
    old = target.parent / f"{_scratch_prefix(target, 'old')}{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private
        if target.exists():
            os.replace(target, old)
            failpoint("atomic_directory.swap")
        os.replace(tmp, target)
    except BaseException:
        if old.exists() and not target.exists():
            os.replace(old, target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
