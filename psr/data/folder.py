"""A plain image-folder layout: ``<root>/<split>/<class>/*.{png,jpg,jpeg}``.

Class folders must be canonical expression names (psr.data.labels.EXPRESSIONS). Split folders are
``train``, ``valid`` (or ``val`` / ``validation``) and ``test``; without a validation folder one is
carved (seeded, stratified) from train.
"""

from __future__ import annotations

from pathlib import Path

from psr.data.labels import EXPRESSIONS
from psr.data.records import DatasetSource, ImageFile, Record
from psr.data.splits import carve_validation, describe

SPLIT_NAMES = {
    "train": "train",
    "valid": "valid",
    "val": "valid",
    "validation": "valid",
    "test": "test",
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def find_splits(root: Path) -> dict[str, Path]:
    """Split name -> folder; unknown or duplicate split folders are errors."""
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    splits: dict[str, Path] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        split = SPLIT_NAMES.get(folder.name)
        if split is None:
            raise ValueError(f"{folder}: not a split folder; expected one of {sorted(SPLIT_NAMES)}")
        if split in splits:
            raise ValueError(f"{folder} and {splits[split]} are both the {split} split")
        splits[split] = folder
    if "train" not in splits:
        raise FileNotFoundError(
            f"{root} has no train/ folder (layout <root>/<split>/<class>/*.png)"
        )
    return splits


def open_folder(
    source: str | Path,
    num_classes: int | None = None,
    seed: int = 0,
    n_folds: int = 5,
    fold: int = 0,
    valid_fraction: float | None = None,
    valid_per_class: int | None = None,
) -> DatasetSource:
    """An image folder as records, classes in canonical order.

    ``num_classes`` 8 keeps all canonical classes, 7 drops contempt; by default 8 when any split
    has a ``contempt`` folder, else 7.
    """
    root = Path(source)
    splits = find_splits(root)
    class_dirs = {split: _class_dirs(folder) for split, folder in splits.items()}
    if num_classes is None:
        num_classes = 8 if any("contempt" in dirs for dirs in class_dirs.values()) else 7
    if num_classes not in (7, 8):
        raise ValueError(f"num_classes must be 7 or 8 for an image folder, got {num_classes}")
    names = EXPRESSIONS if num_classes == 8 else tuple(n for n in EXPRESSIONS if n != "contempt")
    records: list[Record] = []
    for split, dirs in class_dirs.items():
        for name, folder in dirs.items():
            if name not in names:
                continue  # contempt in the 7-class protocol
            for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                rel = image.relative_to(root).as_posix()
                records.append(
                    Record(split, rel, str(image), names.index(name), ImageFile(str(image)))
                )
    if not any(r.split == "train" for r in records):
        raise ValueError(f"{splits['train']} holds no .png/.jpg images in class folders")
    protocol: dict[str, object] = {"num_classes": num_classes, "valid": "valid/ folder"}
    if "valid" not in splits:
        carve_validation(records, seed, n_folds, fold, valid_fraction, valid_per_class)
        protocol["valid"] = describe(seed, n_folds, fold, valid_fraction, valid_per_class)
    return DatasetSource(
        dataset="folder",
        class_names=names,
        channels=3,
        native_size=None,
        records=records,
        protocol=protocol,
        files={"root": str(root)},
    )


def _class_dirs(split_dir: Path) -> dict[str, Path]:
    dirs = {p.name: p for p in sorted(split_dir.iterdir()) if p.is_dir()}
    unknown = sorted(set(dirs) - set(EXPRESSIONS))
    if unknown:
        raise ValueError(
            f"{split_dir}: class folders {unknown} are not canonical expression names;"
            f" use {list(EXPRESSIONS)}"
        )
    return dirs
