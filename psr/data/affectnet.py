"""AffectNet, both releases in circulation.

- Original: ``Manually_Annotated_file_lists/{training,validation}.csv`` with face boxes, and
  whole photos under ``Manually_Annotated_Images/``; faces are cropped with the box.
- Compact: ``{train_set,val_set}/images/<i>.jpg`` with ``annotations/<i>_exp.npy``; faces are
  already cropped.

In both, the official validation set serves as the test set and validation is carved (seeded,
stratified) from train. Codes >= ``num_classes`` (contempt for 7 classes, None, Uncertain,
No-Face) leave the protocol.
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from psr.data.labels import class_names
from psr.data.records import DatasetSource, ImageFile, Record, Skipped, no_training_images
from psr.data.splits import carve_validation, describe

COLUMNS = (
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "facial_landmarks",
    "expression",
    "valence",
    "arousal",
)
N_CODES = 11  # 0..7 expressions, 8 None, 9 Uncertain, 10 No-Face
LISTS = Path("Manually_Annotated_file_lists")
IMAGES = Path("Manually_Annotated_Images")
COMPACT_SPLITS = {"train_set": "train", "val_set": "test"}


def read_file_list(path: str | Path) -> Iterator[tuple[int, str, tuple[int, int, int, int], int]]:
    """``(line, relative image path, face box (x, y, w, h), expression code)`` per row.

    The header is optional (validation.csv is reported without one): a first row whose first
    field is not ``subDirectory_filePath`` but whose box fields are numbers is data.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"AffectNet file list not found: {path}")
    with path.open(newline="") as f:
        rows = csv.reader(f)
        first = next(rows, None)
        if not first:
            raise ValueError(f"{path} line 1 is empty (expected the header {','.join(COLUMNS)})")
        if first[0].strip() == COLUMNS[0]:
            if tuple(h.strip() for h in first) != COLUMNS:  # rows are read by position
                missing = [c for c in COLUMNS if c not in [h.strip() for h in first]]
                raise ValueError(
                    f"{path} line 1: wrong header {','.join(first)!r} (missing column(s)"
                    f" {missing}); expected exactly {','.join(COLUMNS)}"
                )
            data: Iterator[list[str]] = rows
            start = 2
        elif len(first) == len(COLUMNS) and _is_number(first[1]):
            data, start = itertools.chain([first], rows), 1  # no header: the first row is data
        else:
            raise ValueError(
                f"{path} line 1: neither the header {','.join(COLUMNS)} nor a data row"
                f" (got {','.join(first)[:80]!r})"
            )
        for line, row in enumerate(data, start=start):
            if not row:
                continue
            if len(row) != len(COLUMNS):
                raise ValueError(f"{path} line {line}: {len(row)} fields, expected {len(COLUMNS)}")
            try:
                box = tuple(int(float(v)) for v in row[1:5])
                code = int(row[6])
            except (ValueError, OverflowError):  # int(float("inf")) overflows
                raise ValueError(
                    f"{path} line {line}: face box {row[1:5]} or expression {row[6]!r}"
                    " is not a number"
                ) from None
            if not 0 <= code < N_CODES:
                raise ValueError(f"{path} line {line}: expression {code} out of range 0..10")
            yield line, row[0].strip(), box, code  # type: ignore[misc]


def open_affectnet(
    source: str | Path,
    num_classes: int = 8,
    face_margin: float = 0.0,
    seed: int = 0,
    n_folds: int = 5,
    fold: int = 0,
    valid_fraction: float | None = None,
    valid_per_class: int | None = None,
) -> DatasetSource:
    """The original release as records: faces cropped with their box widened by ``face_margin``.

    Rows with a face box of non-positive size are skipped and reported (file and line); boxes
    outside their image are reported when the image is loaded.
    """
    root = Path(source)
    names = class_names("affectnet", num_classes)
    items: list[Record | Skipped] = []
    for file_name, split in (("training.csv", "train"), ("validation.csv", "test")):
        list_path = root / LISTS / file_name
        for line, rel, box, code in read_file_list(list_path):
            if code >= num_classes:
                continue
            image = root / IMAGES / rel
            where = f"{list_path} line {line}"
            if box[2] <= 0 or box[3] <= 0:
                items.append(
                    Skipped(split, str(image), f"{where}: face box {box} has a non-positive size")
                )
                continue
            items.append(
                Record(
                    split=split,
                    id=rel,
                    source=str(image),
                    label=code,
                    image=ImageFile(str(image), box=box, margin=face_margin, listed_at=where),
                )
            )
    return _source(
        items,
        names,
        protocol={"release": "original", "face_margin": face_margin},
        files={"lists": str(root / LISTS), "images": str(root / IMAGES)},
        split_args=(seed, n_folds, fold, valid_fraction, valid_per_class),
    )


def read_expression(path: Path) -> int:
    """The code stored in a compact-release ``<i>_exp.npy`` (a string or integer scalar)."""
    try:
        value = np.load(path, allow_pickle=False)
        return int(value.item() if value.ndim == 0 else value.reshape(-1)[0])
    except (ValueError, OSError, IndexError) as err:
        raise ValueError(f"{path}: not an expression annotation ({err})") from None


def open_affectnet_compact(
    source: str | Path,
    num_classes: int = 8,
    seed: int = 0,
    n_folds: int = 5,
    fold: int = 0,
    valid_fraction: float | None = None,
    valid_per_class: int | None = None,
) -> DatasetSource:
    """The compact release as records (faces already cropped)."""
    root = Path(source)
    names = class_names("affectnet", num_classes)
    items: list[Record | Skipped] = []
    for folder, split in COMPACT_SPLITS.items():
        images = root / folder / "images"
        if not images.is_dir():
            raise FileNotFoundError(f"AffectNet compact release: {images} not found")
        for image in sorted(images.glob("*.jpg"), key=_numeric_stem):
            note = root / folder / "annotations" / f"{image.stem}_exp.npy"
            if not note.is_file():
                items.append(Skipped(split, str(image), f"{note}: annotation file is missing"))
                continue
            code = read_expression(note)
            if not 0 <= code < N_CODES:
                raise ValueError(f"{note}: expression {code} out of range 0..10")
            if code < num_classes:
                items.append(
                    Record(split, f"{folder}/{image.stem}", str(image), code, ImageFile(str(image)))
                )
    return _source(
        items,
        names,
        protocol={"release": "compact"},
        files={folder: str(root / folder) for folder in COMPACT_SPLITS},
        split_args=(seed, n_folds, fold, valid_fraction, valid_per_class),
    )


def _source(
    items: list[Record | Skipped],
    names: tuple[str, ...],
    protocol: dict[str, object],
    files: dict[str, str],
    split_args: tuple[int, int, int, float | None, int | None],
) -> DatasetSource:
    """Carve validation from train and describe the protocol."""
    if not carve_validation(items, *split_args):
        skipped = [item for item in items if isinstance(item, Skipped)]
        what = f"AffectNet training images with codes 0..{len(names) - 1}"
        raise no_training_images(what, skipped)
    return DatasetSource(
        dataset="affectnet",
        class_names=names,
        channels=3,
        native_size=None,
        records=items,
        protocol={
            **protocol,
            "num_classes": len(names),
            "valid": describe(*split_args),
            "test": "official validation set",
        },
        files=files,
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _numeric_stem(path: Path) -> tuple[int, str]:
    return (int(path.stem), "") if path.stem.isdigit() else (-1, path.stem)
