import os

import pytest

from psr.fileio import atomic_directory, atomic_write


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
