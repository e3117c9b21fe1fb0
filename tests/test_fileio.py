import os
from pathlib import Path

import pytest

from psr.fileio import atomic_directory, atomic_write, remove_abandoned


def test_atomic_directory_replaces_only_on_success(tmp_path):
    target = tmp_path / "out" / "ds"
    with atomic_directory(target, marker="a") as tmp:
        (tmp / "a").write_text("first")
    assert (target / "a").read_text() == "first"
    with pytest.raises(RuntimeError), atomic_directory(target, marker="a") as tmp:
        (tmp / "a").write_text("half")
        raise RuntimeError("interrupted")
    assert (target / "a").read_text() == "first"
    with pytest.raises(KeyboardInterrupt), atomic_directory(target, marker="a") as tmp:
        raise KeyboardInterrupt
    assert sorted(os.listdir(tmp_path / "out")) == ["ds"]  # no temporary folders left
    with atomic_directory(target, marker="a") as tmp:
        (tmp / "b").write_text("second")
    assert sorted(os.listdir(target)) == ["b"]
    assert sorted(os.listdir(tmp_path / "out")) == ["ds"]


def test_atomic_directory_never_replaces_unrelated_data(tmp_path):
    """A mistyped output path (the raw data, the project root) must not be wiped."""
    precious = tmp_path / "raw"
    precious.mkdir()
    (precious / "fer2013.csv").write_text("data")
    refused = pytest.raises(ValueError, match=r"has no manifest\.json: refusing to replace it")
    with refused, atomic_directory(precious, marker="manifest.json"):
        pass
    assert (precious / "fer2013.csv").read_text() == "data"
    assert sorted(os.listdir(tmp_path)) == ["raw"]
    (tmp_path / "file").write_text("x")
    with (
        pytest.raises(ValueError, match="not a directory"),
        atomic_directory(tmp_path / "file", "m"),
    ):
        pass
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_directory(empty, marker="m") as tmp:
        (tmp / "m").write_text("ok")
    assert (empty / "m").read_text() == "ok"


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    path = tmp_path / "sub" / "f.bin"
    atomic_write(path, b"one")
    assert path.read_bytes() == b"one"

    def fail(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, fail)
    assert path.read_bytes() == b"one" and os.listdir(path.parent) == ["f.bin"]


_WRITER = """
import sys
from pathlib import Path
from psr.fileio import atomic_directory, atomic_write
target = Path(sys.argv[1])
if sys.argv[2] == "dir":
    with atomic_directory(target, marker="done") as tmp:
        (tmp / "done").write_text("new")
        (tmp / "big").write_bytes(b"x" * 1000)
else:
    def write(f):
        f.write(b"partial")
        f.flush()
        import os, signal
        os.kill(os.getpid(), signal.SIGKILL)
    atomic_write(target, write)
"""


def _killed_writer(target, kind, failpoint=None):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("PSR_FAILPOINT", None)
    if failpoint:
        env["PSR_FAILPOINT"] = failpoint
    done = subprocess.run([sys.executable, "-c", _WRITER, str(target), kind], env=env)
    return done.returncode


@pytest.mark.parametrize("point", ["atomic_directory.swap", None])
def test_a_killed_directory_swap_loses_nothing_and_leaves_nothing(tmp_path, point):
    """SIGKILL between setting the old folder aside and moving the new one in: the next writer
    puts the old one back (nothing lost), then replaces it; no hidden sibling survives."""
    target = tmp_path / "out"
    target.mkdir()
    (target / "done").write_text("old")
    if point:
        assert _killed_writer(target, "dir", point) == -9
        assert not target.exists() and len(list(tmp_path.iterdir())) == 2  # .tmp and .old
        assert remove_abandoned(target) and (target / "done").read_text() == "old"
    assert _killed_writer(target, "dir") == 0
    assert (target / "done").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_killed_file_write_leaves_a_sibling_the_next_write_removes(tmp_path):
    target = tmp_path / "best.pt"
    target.write_bytes(b"old")
    assert _killed_writer(target, "file") == -9
    (leftover,) = [p for p in tmp_path.iterdir() if p != target]
    assert target.read_bytes() == b"old" and leftover.name.startswith(".best.pt.tmp-")
    atomic_write(target, lambda f: f.write(b"new"))
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"] and target.read_bytes() == b"new"


def test_only_siblings_of_dead_writers_are_removed(tmp_path):
    import os

    from psr.fileio import _scratch_prefix

    target = tmp_path / "data"
    mine = tmp_path / f"{_scratch_prefix(target, 'tmp')}abc"  # this (live) process
    mine.mkdir()
    dead = tmp_path / mine.name.replace(f"-{os.getpid()}-", "-999999999-")
    dead.mkdir()
    other = tmp_path / ".data.tmp-xyz"  # no host and pid: not ours to judge
    other.mkdir()
    assert remove_abandoned(target) == [dead]
    assert mine.exists() and other.exists() and not dead.exists()
