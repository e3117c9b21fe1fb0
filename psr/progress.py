"""Progress of the long steps (epochs, batches, prepare, SR pre-training, tuning trials).

One rule for every bar: on a terminal, a live tqdm bar (count, rate, ETA); anywhere else (a log
file, a Prefect worker reading the output through a pipe) a plain line at most every
:data:`LINE_EVERY_S` seconds, so a log holds readable lines instead of a bar redrawn with
carriage returns. ``dvc repro`` passes its terminal through to the stage, so a stage run from a
terminal gets the bar.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any, TypeVar

from tqdm import tqdm

#: Seconds between two progress lines when the output is not a terminal.
LINE_EVERY_S = 10.0

T = TypeVar("T")


def progress_bar(
    iterable: Iterable[T] | None = None,
    *,
    desc: str,
    total: int | None = None,
    unit: str = "it",
    initial: int = 0,
    leave: bool = True,
    enabled: bool = True,
    file: IO[str] | None = None,
    every: float = LINE_EVERY_S,
) -> Bar:
    """A progress bar over ``iterable`` (or updated by hand): tqdm when ``file`` (default
    stderr) is a terminal, else :class:`LineProgress`. ``leave=False``: a transient bar (a
    batch bar inside an epoch), no final line; ``enabled=False``: nothing is shown."""
    out = sys.stderr if file is None else file
    if enabled and not _is_terminal(out):
        return LineProgress(iterable, desc, total, unit, initial, leave, out, every)
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        unit=unit,
        initial=initial,
        leave=leave,
        file=out,
        disable=not enabled,
    )


def _is_terminal(out: IO[str]) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


class LineProgress:
    """The part of tqdm's interface the jobs use (iterate, ``update``, ``set_postfix``,
    ``close``, a context manager), printing one line per ``every`` seconds::

        phase 1, epoch 3/18: 120/400 batch (30%), 31.2 batch/s, elapsed 00:04, ETA 00:09, loss=0.51
    """

    def __init__(
        self,
        iterable: Iterable[Any] | None,
        desc: str,
        total: int | None,
        unit: str,
        initial: int,
        leave: bool,
        file: IO[str],
        every: float,
    ):
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.iterable, self.desc, self.total, self.unit = iterable, desc, total, unit
        self.n = self._start_n = initial
        self.leave, self.file, self.every = leave, file, every
        self.postfix = ""
        self._start = self._last_line = time.monotonic()
        self._printed_n: int | None = None
        self._closed = False

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError(f"progress {self.desc!r} has no iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._last_line >= self.every:
            self._print()

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        """Shown on the next line (never prints by itself: a line per call would flood a log)."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.leave and self._printed_n != self.n:
            self._print()

    def line(self) -> str:
        """The current progress as one line: count, share, rate, elapsed and remaining time."""
        elapsed = time.monotonic() - self._start
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        if rate >= 1 or rate == 0:
            parts.append(f"{rate:.3g} {self.unit}/s")
        else:  # slow steps (epochs, trials) read better as time per step
            parts.append(f"{1 / rate:.3g} s/{self.unit}")
        parts.append(f"elapsed {tqdm.format_interval(elapsed)}")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"ETA {tqdm.format_interval((self.total - self.n) / rate)}")
        if self.postfix:
            parts.append(self.postfix)
        return f"{self.desc}: {', '.join(parts)}"

    def _print(self) -> None:
        self._last_line = time.monotonic()
        self._printed_n = self.n
        print(self.line(), file=self.file, flush=True)


#: What :func:`progress_bar` returns.
Bar = tqdm | LineProgress
