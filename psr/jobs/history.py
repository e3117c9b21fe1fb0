"""The one history format of every job that trains: ``history.csv``, one row per epoch."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"


def write_history(path: str | Path, rows: Iterable[Mapping[str, float]]) -> Path:
    """Write the per-epoch rows as CSV, atomically (a reader never sees half a file)."""
    import pandas as pd

    from psr.fileio import write_text

    return write_text(path, pd.DataFrame([dict(r) for r in rows]).to_csv(index=False))


class HistoryFile:
    """An epoch callback that rewrites ``history.csv`` after every epoch, so a crash keeps the
    curve so far."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: dict[int, dict[str, float]] = {}

    def __call__(self, epoch: int, metrics: Mapping[str, float]) -> None:
        self.rows[int(epoch)] = dict(metrics)
        write_history(self.path, (self.rows[e] for e in sorted(self.rows)))
