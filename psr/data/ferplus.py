"""FER+ : FER2013's pixels (``fer2013.csv``) joined row by row with Microsoft's crowd votes
(``fer2013new.csv``), Microsoft's four ways of turning votes into training targets, and the
official PSR code's (``official``: every image's raw 8-emotion vote proportions).

Two test-set definitions are in use (published FER+ numbers mix them): Microsoft's ``majority``
(3,153 PrivateTest images with a majority emotion) and ``argmax`` (every PrivateTest face with an
emotion vote, 3,573, labelled by its most voted emotion). The prepared test split holds the
second; the two agree on the label of every image of the first, so :func:`definition_masks`
selects either from the split's vote columns.

The vote processing works on the vote file alone (:func:`read_votes`, :func:`label_votes`), so the
golden counts of docs/datasets.md can be checked without the Kaggle images.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from psr.data.labels import EXPRESSIONS, class_names
from psr.data.records import FER_SIDE, DatasetSource, PixelRow, Record

VoteMode = Literal["majority", "probability", "crossentropy", "multi_target", "official"]
VOTE_MODES: tuple[str, ...] = get_args(VoteMode)
#: Microsoft's modes (microsoft/FERPlus ``src/ferplus.py``); ``official`` is the PSR code's.
MICROSOFT_MODES: tuple[str, ...] = VOTE_MODES[:4]
#: The test-set definitions :func:`definition_masks` selects, Microsoft's first.
TEST_DEFINITIONS: tuple[str, ...] = ("majority", "argmax")

#: The ten vote columns of fer2013new.csv: the eight emotions (FER+ order), unknown, not-a-face.
VOTE_NAMES: tuple[str, ...] = (*EXPRESSIONS, "unknown", "NF")
VOTES_HEADER: tuple[str, ...] = ("Usage", "Image name", *VOTE_NAMES)
SPLITS: dict[str, str] = {"Training": "train", "PublicTest": "valid", "PrivateTest": "test"}
FER2013_COLUMNS = ("emotion", "pixels", "Usage")
FER2013_CLASSES = 7  # fer2013.csv's own `emotion` column: 0..6

_UNKNOWN = VOTE_NAMES.index("unknown")
_N_EMOTIONS = len(EXPRESSIONS)


@dataclass(frozen=True)
class FerPlusVotes:
    """The content of fer2013new.csv, one entry per FER2013 row."""

    path: Path
    usage: np.ndarray  # [N] str: Training / PublicTest / PrivateTest
    names: np.ndarray  # [N] str: Microsoft's "fer%07d.png" image name, "" for a not-a-face image
    votes: np.ndarray  # [N, 10] float64 raw vote counts over VOTE_NAMES

    def __len__(self) -> int:
        return len(self.usage)


@dataclass(frozen=True)
class FerPlusLabels:
    """The rows of fer2013new.csv that a vote mode keeps, with their labels and targets."""

    rows: np.ndarray  # [M] int64, index into the vote file
    splits: np.ndarray  # [M] str: train / valid / test
    labels: np.ndarray  # [M] int64, index into class_names
    targets: np.ndarray  # [M, K] float64, each row sums to 1
    class_names: tuple[str, ...]

    def counts(self, split: str) -> np.ndarray:
        """Images per class of ``split``, in ``class_names`` order."""
        return np.bincount(self.labels[self.splits == split], minlength=len(self.class_names))


def read_votes(path: str | Path) -> FerPlusVotes:
    """Read and validate fer2013new.csv (exact header, 12 fields, non-negative integer votes,
    every row where its ``Image name`` says: :mod:`psr.data.ferplus_names`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FER+ vote file not found: {path}")
    try:
        table = _read_votes(path)
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}: not a UTF-8 text CSV (byte {err.start}: {err.reason}); expected "
            "Microsoft's fer2013new.csv"
        ) from None
    check_image_names(table)
    return table


def check_image_names(table: FerPlusVotes) -> None:
    """Every named row is the row of its image: rows that moved label the wrong faces."""
    from psr.data.ferplus_names import expected_names, name_of

    expected = expected_names(len(table))
    for row, name in enumerate(table.names.tolist()):
        want = name_of(row) if expected is None else expected[row]
        if name != want and (name or expected is not None):
            raise ValueError(
                f"{table.path} line {row + 2}: Image name {name!r} where row {row} of "
                f"fer2013.csv needs {want!r}: vote rows are shifted or reordered (each row must "
                "label the fer2013.csv row of the same index)"
            )


def _read_votes(path: Path) -> FerPlusVotes:
    usage, names, votes = [], [], []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path} is empty (expected the FER+ header {','.join(VOTES_HEADER)})")
        if tuple(header) != VOTES_HEADER:
            raise ValueError(
                f"{path} line 1: wrong header {','.join(header)!r}; "
                f"expected exactly {','.join(VOTES_HEADER)!r}"
            )
        for line, row in enumerate(reader, start=2):
            if len(row) != len(VOTES_HEADER):
                raise ValueError(f"{path} line {line}: {len(row)} fields, expected 12")
            if row[0] not in SPLITS:
                raise ValueError(f"{path} line {line}: Usage {row[0]!r} not one of {list(SPLITS)}")
            try:
                counts = [int(v) for v in row[2:]]
            except ValueError:
                raise ValueError(
                    f"{path} line {line}: votes must be integers, got {row[2:]}"
                ) from None
            if min(counts) < 0:
                raise ValueError(f"{path} line {line}: negative vote count in {row[2:]}")
            usage.append(row[0])
            names.append(row[1].strip())
            votes.append(counts)
    if not usage:
        raise ValueError(f"{path} has a header but no rows")
    return FerPlusVotes(
        path, np.array(usage), np.array(names), np.array(votes, dtype=np.float64).reshape(-1, 10)
    )


def vote_distribution(raw: Sequence[float], mode: str) -> list[float]:
    """One image's 10 raw votes -> Microsoft's normalised 10-way distribution for ``mode``.

    A line-by-line port of ``FERPlusReader._process_data`` (microsoft/FERPlus ``src/ferplus.py``),
    ties and all: an image the mode rejects comes back as all mass on "unknown".
    """
    if mode not in MICROSOFT_MODES:
        raise ValueError(f"unknown vote mode {mode!r}; expected one of {MICROSOFT_MODES}")
    size = len(raw)
    unknown = [0.0] * size
    unknown[_UNKNOWN] = 1.0
    # Outlier removal: a single vote for an emotion is noise.
    votes = [0.0 if v < 1.0 + sys.float_info.epsilon else float(v) for v in raw]
    total = sum(votes)
    emotion = [0.0] * size
    if mode == "majority":
        peak = max(votes)
        if peak > 0.5 * total:
            emotion[votes.index(peak)] = peak  # the first maximum, as np.argmax
        else:
            emotion = unknown
    elif mode in ("probability", "crossentropy"):
        # Take the top emotions greedily (ties together) until 75% of the votes are covered.
        covered, count, valid = 0.0, 0, True
        while covered < 0.75 * total and count < 3 and valid:
            peak = max(votes)
            for i in range(size):
                if votes[i] == peak:
                    emotion[i] = peak
                    votes[i] = 0.0
                    covered += peak
                    count += 1
                    if i >= _N_EMOTIONS:  # unknown / not-a-face tie with the peak
                        valid = False
                        if sum(emotion) > peak:  # emotions were taken before it: drop it
                            emotion[i] = 0.0
                            count -= 1
                        break
        if sum(emotion) <= 0.5 * total or count > 3:
            emotion = unknown
    else:  # multi_target: every emotion with at least 30% of the votes
        for i in range(size):
            if votes[i] >= 0.3 * total:
                emotion[i] = votes[i]
        if sum(emotion) <= 0.5 * total:
            emotion = unknown
    kept = sum(emotion)
    return [e / kept for e in emotion]


def process_votes(votes: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw votes ``[N, 10]`` -> (keep ``[N]`` bool, targets ``[N, 8]`` over EXPRESSIONS).

    An image is kept when the argmax of its distribution is an emotion (not unknown/NF); its
    target is the distribution cut to the 8 emotions and renormalised (Microsoft's
    ``load_folders``). ``official`` keeps Microsoft's majority images (the official code reads
    a folder layout of them) with their raw 8-emotion proportions as targets: no outlier
    removal, no 75 % truncation.
    """
    votes = np.asarray(votes, dtype=np.float64)
    if votes.ndim != 2 or votes.shape[1] != len(VOTE_NAMES):
        raise ValueError(f"votes must be [N, {len(VOTE_NAMES)}], got {list(votes.shape)}")
    if mode == "official":
        keep, _ = process_votes(votes, "majority")
        return keep, emotion_proportions(votes)
    # Images share vote vectors (about 5k distinct in 36k rows): process each vector once.
    unique, inverse = np.unique(votes, axis=0, return_inverse=True)
    keep = np.zeros(len(unique), dtype=bool)
    targets = np.zeros((len(unique), _N_EMOTIONS))
    for i, raw in enumerate(unique.tolist()):  # plain floats: 10x faster than numpy scalars
        dist = vote_distribution(raw, mode)
        if dist.index(max(dist)) < _N_EMOTIONS:
            keep[i] = True
            emotions = dist[:_N_EMOTIONS]
            targets[i] = emotions
            targets[i] /= sum(emotions)
    inverse = inverse.reshape(-1)
    return keep[inverse], targets[inverse]


def emotion_proportions(votes: np.ndarray) -> np.ndarray:
    """Raw votes ``[N, 10]`` -> the 8 emotion votes L1-normalised ``[N, 8]`` (zeros for an image
    without an emotion vote)."""
    emotions = np.asarray(votes, dtype=np.float64)[:, :_N_EMOTIONS]
    totals = emotions.sum(axis=1, keepdims=True)
    return np.divide(emotions, totals, out=np.zeros_like(emotions), where=totals > 0)


def _argmax_targets(votes: np.ndarray, soft: bool) -> tuple[np.ndarray, np.ndarray]:
    """The ``argmax`` test set: every image with an emotion vote, labelled by its most voted
    emotion (the first of ties); targets its proportions (``soft``) or that label one-hot."""
    proportions = emotion_proportions(votes)
    keep = proportions.sum(axis=1) > 0
    targets = proportions if soft else np.eye(_N_EMOTIONS)[proportions.argmax(axis=1)]
    return keep, targets


def label_votes(
    table: FerPlusVotes, vote_mode: str = "majority", num_classes: int = 8
) -> FerPlusLabels:
    """Labels and targets of every kept image; not-a-face rows (no image name) skipped.

    Training: ``vote_mode``. PublicTest: majority (as Microsoft's train.py), with the raw
    proportions as targets under ``official``. PrivateTest: the ``argmax`` test set, which
    holds the ``majority`` one (:func:`definition_masks`). ``num_classes=7`` also drops contempt
    images and renormalises targets over the 7 classes.
    """
    if vote_mode not in VOTE_MODES:
        raise ValueError(f"unknown vote mode {vote_mode!r}; expected one of {VOTE_MODES}")
    names = class_names("ferplus", num_classes)
    columns = [EXPRESSIONS.index(n) for n in names]
    is_face = table.names != ""
    keep = np.zeros(len(table), dtype=bool)
    targets = np.zeros((len(table), _N_EMOTIONS))
    official = vote_mode == "official"
    for usage, split in SPLITS.items():
        rows = np.flatnonzero(is_face & (table.usage == usage))
        if split == "test":
            keep[rows], targets[rows] = _argmax_targets(table.votes[rows], soft=official)
            continue
        mode = vote_mode if split == "train" or official else "majority"
        keep[rows], targets[rows] = process_votes(table.votes[rows], mode)
    labels8 = targets.argmax(axis=1)
    keep &= np.isin(labels8, columns)  # 7 classes: contempt images leave the protocol
    rows = np.flatnonzero(keep)
    cut = targets[rows][:, columns]  # [M, K]
    cut /= cut.sum(axis=1, keepdims=True)
    return FerPlusLabels(
        rows=rows,
        splits=np.array([SPLITS[u] for u in table.usage[rows]]),
        labels=cut.argmax(axis=1).astype(np.int64),
        targets=cut,
        class_names=names,
    )


def scan_fer2013(path: str | Path) -> Iterator[tuple[int, str, int, int, int]]:
    """Stream fer2013.csv (or the icml_face_data.csv variant) without parsing pixels.

    Yields ``(line, usage, emotion, start, stop)`` per row, ``[start, stop)`` being the byte
    range of the pixel string, so a worker can read and decode it later.
    """
    path = Path(path)
    with path.open("rb") as f:
        header = f.readline()
        if not header.strip():
            raise ValueError(f"{path} is empty (expected the header emotion,pixels,Usage)")
        columns = [c.strip() for c in header.decode("utf-8", "replace").strip().split(",")]
        missing = [c for c in FER2013_COLUMNS if c not in columns]
        if missing or len(columns) != len(FER2013_COLUMNS):
            raise ValueError(
                f"{path} line 1: wrong header {header.decode('utf-8', 'replace').strip()!r}"
                f" (missing column(s) {missing}); expected emotion,pixels,Usage or the"
                " icml_face_data.csv variant 'emotion, Usage, pixels'"
            )
        i_emotion, i_pixels, i_usage = (columns.index(c) for c in FER2013_COLUMNS)
        line = 1
        for block, base in _blocks(f, len(header)):
            pos = 0
            while pos < len(block):  # every block ends with a complete line
                end = block.index(b"\n", pos)
                line += 1
                stop = end - 1 if end > pos and block[end - 1] == 13 else end  # drop a CR
                row_start, pos = pos, end + 1
                if stop - row_start < 16 and not block[row_start:stop].strip():
                    continue  # blank line
                # Three fields, no quoting: find the two commas without copying the pixels.
                first = block.find(b",", row_start, stop)
                second = block.find(b",", first + 1, stop) if first >= 0 else -1
                if second < 0 or block.find(b",", second + 1, stop) >= 0:
                    fields = block.count(b",", row_start, stop) + 1
                    raise ValueError(f"{path} line {line}: {fields} fields, expected 3")
                bounds = ((row_start, first), (first + 1, second), (second + 1, stop))
                text = block[slice(*bounds[i_emotion])]
                try:
                    emotion = int(text)
                except ValueError:
                    raise ValueError(
                        f"{path} line {line}: emotion {text.decode(errors='replace')!r}"
                        " is not an integer"
                    ) from None
                if not 0 <= emotion < FER2013_CLASSES:
                    raise ValueError(f"{path} line {line}: emotion {emotion} out of range 0..6")
                usage = block[slice(*bounds[i_usage])].strip().decode(errors="replace")
                pixel_start, pixel_stop = bounds[i_pixels]
                yield line, usage, emotion, base + pixel_start, base + pixel_stop


def _blocks(f, offset: int, size: int = 1 << 22) -> Iterator[tuple[bytes, int]]:
    """Read ``f`` in blocks that end on a line break; yield (block, its byte offset)."""
    rest = b""
    while True:
        chunk = f.read(size)
        if not chunk:
            if rest:
                yield rest + b"\n", offset  # a last line without a line break
            return
        data = rest + chunk
        cut = data.rfind(b"\n") + 1
        if cut:
            yield data[:cut], offset
            offset += cut
        rest = data[cut:]


def sample_id(row: int) -> str:
    """The prepared id of FER2013 row ``row`` (0-based, header excluded). Not Microsoft's
    ``Image name``: those skip numbers and repeat a few."""
    return f"row{row:05d}"


def find_files(source: str | Path, votes: str | Path | None = None) -> tuple[Path, Path]:
    """(pixel CSV, vote CSV) under ``source``: fer2013.csv or icml_face_data.csv, and
    fer2013new.csv (or ``votes`` when given). ``source`` may also be the pixel CSV itself."""
    source = Path(source)
    if source.is_file():
        pixels = source
    else:
        candidates = [source / "fer2013.csv", source / "icml_face_data.csv"]
        found = [p for p in candidates if p.is_file()]
        if not found:
            raise FileNotFoundError(f"neither fer2013.csv nor icml_face_data.csv in {source}")
        pixels = found[0]
    vote_file = Path(votes) if votes is not None else pixels.parent / "fer2013new.csv"
    if not vote_file.is_file():
        raise FileNotFoundError(f"FER+ vote file not found: {vote_file}")
    return pixels, vote_file


def open_ferplus(
    source: str | Path,
    vote_mode: str = "majority",
    num_classes: int = 8,
    votes: str | Path | None = None,
) -> DatasetSource:
    """FER+ as a stream of records: every face row of fer2013.csv that ``vote_mode`` keeps."""
    pixels, vote_file = find_files(source, votes)
    table = read_votes(vote_file)
    chosen = label_votes(table, vote_mode, num_classes)
    return DatasetSource(
        dataset="ferplus",
        class_names=chosen.class_names,
        channels=1,
        native_size=(FER_SIDE, FER_SIDE),
        records=_join(pixels, table, chosen),
        vote_names=VOTE_NAMES,
        protocol={
            "vote_mode": vote_mode,
            "num_classes": num_classes,
            "valid": "official PublicTest, majority",
            "test": "official PrivateTest, argmax (holds Microsoft's majority set)",
        },
        files={"pixels": str(pixels), "votes": str(vote_file)},
    )


def _join(pixels: Path, table: FerPlusVotes, chosen: FerPlusLabels) -> Iterator[Record]:
    """Walk fer2013.csv and the vote file together, checking they describe the same rows."""
    position = {int(r): k for k, r in enumerate(chosen.rows)}
    usages, votes = table.usage.tolist(), table.votes.tolist()  # plain Python: fast per row
    splits, labels, targets = (
        chosen.splits.tolist(),
        chosen.labels.tolist(),
        chosen.targets.tolist(),
    )
    where = str(pixels)
    n_rows = 0
    for row, (line, usage, _, start, stop) in enumerate(scan_fer2013(pixels)):
        n_rows = row + 1
        if row >= len(table):
            continue  # counted, reported below
        if usage != usages[row]:
            raise ValueError(
                f"{pixels} line {line}: Usage {usage!r} but {table.path} line {row + 2} says"
                f" {usages[row]!r}: the two files are not in the same row order"
            )
        k = position.get(row)
        if k is None:
            continue
        yield Record(
            split=splits[k],
            id=sample_id(row),
            source=f"{pixels.name}:{row}",
            label=labels[k],
            image=PixelRow(where, line, start, stop),
            votes=tuple(votes[row]),
            target=tuple(targets[k]),
        )
    if n_rows != len(table):
        raise ValueError(
            f"{pixels} has {n_rows} rows but {table.path} has {len(table)}: FER+ needs the"
            " same rows in the same order (35,887 in the real files)"
        )


def definition_masks(votes: np.ndarray) -> dict[str, np.ndarray]:
    """Which rows of a prepared FER+ test split (its raw votes ``[N, 10]`` over VOTE_NAMES) each
    test-set definition takes: ``argmax`` every row with an emotion vote, ``majority`` those
    with Microsoft's majority emotion. Both label a shared row alike (the majority emotion has
    the most votes), so the split's ``label`` column serves both."""
    keep, _ = process_votes(votes, "majority")
    return {"majority": keep, "argmax": emotion_proportions(votes).sum(axis=1) > 0}


def split_definitions(root: str | Path, split: str) -> dict[str, np.ndarray]:
    """:func:`definition_masks` of a prepared split from its ``votes_*`` columns; empty when the
    split does not carry the ten FER+ vote columns (other datasets)."""
    import pandas as pd

    columns = [f"votes_{name}" for name in VOTE_NAMES]
    index = pd.read_csv(Path(root) / f"{split}.csv", nrows=0)
    if not set(columns) <= set(index.columns):
        return {}
    votes = pd.read_csv(Path(root) / f"{split}.csv", usecols=columns)[columns].to_numpy(float)
    return definition_masks(votes)
