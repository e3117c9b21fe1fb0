"""The ``Image name`` column of Microsoft's fer2013new.csv, to catch vote rows that moved.

FER+ labels are joined to fer2013.csv by row order alone, so a vote row that moved (an edit, a
bad merge) silently labels the wrong faces. Each row's ``Image name`` shows where it belongs:
in a file this project generates it is ``fer%07d.png`` of the row index; Microsoft's own file
skips numbers and has a few out of order, so its 35,887 names ship here as runs of
``row - number`` (``ferplus_names.json``, made from the file by ``python -m
psr.data.ferplus_names fer2013new.csv``).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from functools import cache
from pathlib import Path

NAMES_FILE = Path(__file__).with_name("ferplus_names.json")


def name_of(number: int) -> str:
    return f"fer{number:07d}.png"


def encode(names: Sequence[str]) -> list[list[int | None]]:
    """``[[first row, row - number or None (no name), rows], ...]``."""
    runs: list[list[int | None]] = []
    for row, name in enumerate(names):
        offset = row - int(name[3:10]) if name else None
        if runs and runs[-1][1] == offset:
            runs[-1][2] += 1  # type: ignore[operator]
        else:
            runs.append([row, offset, 1])
    return runs


def decode(runs: Sequence[Sequence[int | None]]) -> list[str]:
    names = []
    for first, offset, count in runs:
        for row in range(first, first + count):
            names.append("" if offset is None else name_of(row - offset))
    return names


@cache
def microsoft_names() -> tuple[str, ...]:
    """Every row's ``Image name`` in Microsoft's fer2013new.csv ("" where it has none)."""
    return tuple(decode(json.loads(NAMES_FILE.read_text())["runs"]))


def expected_names(rows: int) -> tuple[str, ...] | None:
    """The names a vote file of ``rows`` rows must have: Microsoft's for a file of its length,
    else ``fer%07d.png`` of the row index (``None``: any row may have none)."""
    ours = microsoft_names()
    return ours if rows == len(ours) else None


def _column(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as f:
        return [row[1].strip() for row in list(csv.reader(f))[1:]]


def main(argv: list[str] | None = None) -> int:
    """Write ferplus_names.json from a fer2013new.csv."""
    (source,) = argv if argv is not None else sys.argv[1:]
    from psr.fileio import sha256, write_json

    names = _column(Path(source))
    document = {
        "source": "microsoft/FERPlus fer2013new.csv (MIT): the Image name column",
        "sha256": sha256(source),
        "rows": len(names),
        "runs": encode(names),
    }
    write_json(NAMES_FILE, document)
    print(f"{NAMES_FILE}: {len(names)} rows in {len(document['runs'])} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
