"""RAF-DB basic: ``EmoLabel/list_patition_label.txt`` (sic) and the aligned or original images.

The official split is train/test by file-name prefix; validation is one fold of a seeded
stratified split of train (the PSR recipe), so the test set is never used to select models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from psr.data.labels import class_names
from psr.data.records import DatasetSource, ImageFile, Record
from psr.data.splits import carve_validation, describe

LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"  # the official spelling
ALIGNED_SIZE = (100, 100)
RafImages = Literal["aligned", "original"]


def read_label_file(path: str | Path) -> list[tuple[str, str, int, int]]:
    """``(name, split, label 0..6, line)`` per line of the label file (LF or CRLF)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"RAF-DB label file not found: {path}")
    entries, seen = [], set()
    with path.open(newline=None) as f:  # universal newlines: CRLF reads as LF
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            fields = text.split()
            if len(fields) != 2:
                raise ValueError(
                    f"{path} line {line}: expected '<image name> <label>', got {text!r}"
                )
            name, value = fields
            split = name.split("_", 1)[0]
            if split not in ("train", "test"):
                raise ValueError(
                    f"{path} line {line}: {name!r} does not start with train_ or test_"
                )
            try:
                label = int(value)
            except ValueError:
                raise ValueError(f"{path} line {line}: label {value!r} is not an integer") from None
            if not 1 <= label <= 7:
                raise ValueError(f"{path} line {line}: label {label} out of range 1..7")
            if name in seen:
                raise ValueError(f"{path} line {line}: {name} is listed twice")
            seen.add(name)
            entries.append((name, split, label - 1, line))
    if not entries:
        raise ValueError(f"{path} is empty")
    return entries


def find_root(source: str | Path) -> Path:
    """The ``basic/`` folder: ``source`` itself, or ``source/basic`` (the download's root)."""
    source = Path(source)
    if not (source / LABEL_FILE).exists() and (source / "basic" / LABEL_FILE).exists():
        return source / "basic"
    return source


def image_path(root: Path, name: str, images: RafImages) -> Path:
    """Where RAF-DB keeps ``name`` (``train_00001.jpg``) in the aligned or original set."""
    if images == "aligned":
        return root / "Image" / "aligned" / f"{Path(name).stem}_aligned.jpg"
    return root / "Image" / "original" / name


def sample_id(name: str) -> str:
    """The prepared id of the image listed as ``name``: its stem (``train_00001``)."""
    return Path(name).stem


def open_rafdb(
    source: str | Path,
    num_classes: int = 7,
    images: RafImages = "aligned",
    seed: int = 0,
    n_folds: int = 5,
    fold: int = 0,
    valid_fraction: float | None = None,
    valid_per_class: int | None = None,
) -> DatasetSource:
    """RAF-DB basic as records; ``source`` is the ``basic/`` folder or its parent."""
    if images not in ("aligned", "original"):
        raise ValueError(f"images must be 'aligned' or 'original', got {images!r}")
    root = find_root(source)
    names = class_names("rafdb", num_classes)
    label_file = root / LABEL_FILE
    records = [
        Record(
            split=split,
            id=sample_id(name),
            source=str(image_path(root, name, images)),
            label=label,
            image=ImageFile(
                str(image_path(root, name, images)), listed_at=f"{label_file} line {line}"
            ),
        )
        for name, split, label, line in read_label_file(label_file)
    ]
    if not carve_validation(records, seed, n_folds, fold, valid_fraction):
        raise ValueError(f"{label_file} lists no train_ images: cannot carve a validation split")
    return DatasetSource(
        dataset="rafdb",
        class_names=names,
        channels=3,
        native_size=ALIGNED_SIZE if images == "aligned" else None,
        records=records,
        protocol={
            "num_classes": num_classes,
            "images": images,
            "valid": describe(seed, n_folds, fold, valid_fraction, valid_per_class),
            "test": "official test",
        },
        files={"labels": str(label_file), "images": str(root / "Image" / images)},
    )
