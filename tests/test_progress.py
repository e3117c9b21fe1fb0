"""psr.progress: a tqdm bar on a terminal, throttled plain lines anywhere else."""

from __future__ import annotations

import io

import pytest
from tqdm import tqdm

from psr import progress as progress_module
from psr.progress import LineProgress, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(progress_module.time, "monotonic", fake)
    return fake


def test_a_terminal_gets_a_live_tqdm_bar():
    out = Terminal()
    bar = progress_bar(range(5), desc="epochs", unit="epoch", file=out)
    assert isinstance(bar, tqdm)
    assert list(bar) == [0, 1, 2, 3, 4]
    assert "\r" in out.getvalue() and "epochs" in out.getvalue() and "5/5" in out.getvalue()


def test_a_log_gets_whole_lines_at_most_one_per_interval(clock):
    out = io.StringIO()  # not a terminal: a log file, a pipe to a Prefect worker
    bar = progress_bar(total=400, desc="phase 1, epoch 3/18", unit="batch", file=out, every=10)
    assert isinstance(bar, LineProgress)
    for _ in range(400):  # 400 batches over 40 s: 0.1 s each
        clock.now += 0.1
        bar.update(1)
        if bar.n == 120:
            bar.set_postfix(loss="0.5123")
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 4  # every 10 s (100 batches); the last at 400 is not repeated by close
    assert lines[0] == (
        "phase 1, epoch 3/18: 100/400 batch (25%), 10 batch/s, elapsed 00:10, ETA 00:30"
    )
    assert lines[1].startswith("phase 1, epoch 3/18: 200/400 batch (50%)")
    assert lines[1].endswith("ETA 00:20, loss=0.5123")
    assert lines[-1].startswith("phase 1, epoch 3/18: 400/400 batch (100%)")
    assert "ETA" not in lines[-1]


def test_a_final_line_unless_transient(clock):
    kept, transient = io.StringIO(), io.StringIO()
    for out, leave in ((kept, True), (transient, False)):
        for _ in progress_bar(range(3), desc="prepare: decode", unit="img", file=out, leave=leave):
            clock.now += 1
    assert kept.getvalue() == "prepare: decode: 3/3 img (100%), 1 img/s, elapsed 00:03\n"
    assert transient.getvalue() == ""  # a batch bar: the epoch's own log line follows


def test_slow_steps_read_as_seconds_per_step_and_resume_from_initial(clock):
    out = io.StringIO()
    bar = progress_bar(total=18, initial=4, desc="epochs", unit="epoch", file=out, every=10)
    clock.now += 40
    bar.update(1)  # 40 s for the one epoch run here, not for the 4 resumed ones
    assert out.getvalue() == ("epochs: 5/18 epoch (28%), 40 s/epoch, elapsed 00:40, ETA 08:40\n")


def test_disabled_shows_nothing():
    out = io.StringIO()
    assert list(progress_bar(range(3), desc="x", enabled=False, file=out)) == [0, 1, 2]
    assert out.getvalue() == ""
