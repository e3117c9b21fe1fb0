"""The prepared format (docs/architecture.md): one folder per dataset with, per split,
``<split>.npy`` (uint8 ``[N, H, W, C]``) and ``<split>.csv`` (id, source, label, optional
``votes_<name>`` and ``target_<class>``), plus ``manifest.json``. FER+ indexes carry all ten
vote columns (the eight emotions, ``votes_unknown`` and ``votes_NF``) so that the paper's prior
can be recomputed exactly; :func:`load_split` returns the votes over ``class_names``.

Writing goes to a temporary folder that is renamed into place only when complete; reading
memory-maps the images.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from psr.fileio import atomic_path, sha256

SPLITS: tuple[str, ...] = ("train", "valid", "test")
ID_COLUMN = "id"  # the sample id column of <split>.csv, and the join key of per-sample sidecars
MANIFEST = "manifest.json"
REQUIRED_KEYS = ("dataset", "protocol", "class_names", "image_size", "channels", "splits")


@dataclass(frozen=True)
class PreparedSplit:
    """One split of a prepared dataset; ``images`` is memory-mapped, nothing else is large."""

    split: str
    images: np.ndarray  # uint8 [N, H, W, C], memory-mapped
    labels: np.ndarray  # int64 [N], index into class_names
    votes: np.ndarray | None  # float32 [N, K] raw crowd votes over class_names
    soft_targets: np.ndarray | None  # float32 [N, K] training target distribution
    ids: np.ndarray  # [N] str
    sources: np.ndarray  # [N] str: file path or "<csv>:<row>"
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask: np.ndarray) -> PreparedSplit:
        """The rows where the boolean ``mask [N]`` holds (their images read into memory)."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != self.labels.shape:
            raise ValueError(f"mask of {list(mask.shape)} for a split of {len(self)} rows")
        optional = {k: getattr(self, k) for k in ("votes", "soft_targets")}
        return replace(
            self,
            images=np.ascontiguousarray(self.images[mask]),
            labels=self.labels[mask],
            ids=self.ids[mask],
            sources=self.sources[mask],
            **{k: None if v is None else v[mask] for k, v in optional.items()},
        )


def read_manifest(root: str | Path) -> dict:
    """``manifest.json`` of a prepared dataset, checked for the contract's keys."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"not a prepared dataset (no {MANIFEST}): {Path(root)}")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}")
    return manifest


def load_split(root: str | Path, split: str) -> PreparedSplit:
    """Load ``split`` of the prepared dataset at ``root`` (images memory-mapped, read-only)."""
    root = Path(root)
    manifest = read_manifest(root)
    if split not in manifest["splits"]:
        raise ValueError(f"{root} has no split {split!r}; it has {sorted(manifest['splits'])}")
    names = tuple(manifest["class_names"])
    index_path, images_path = root / f"{split}.csv", root / f"{split}.npy"
    for path in (index_path, images_path):
        if not path.is_file():
            raise FileNotFoundError(f"prepared dataset is missing {path}")
    index = pd.read_csv(index_path, dtype={ID_COLUMN: str, "source": str}, keep_default_na=False)
    missing = [c for c in (ID_COLUMN, "source", "label") if c not in index.columns]
    if missing:
        raise ValueError(f"{index_path}: missing column(s) {missing}")
    images = np.load(images_path, mmap_mode="r")
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(index):
        raise ValueError(
            f"{images_path}: {images.dtype} {list(images.shape)}, expected uint8"
            f" [{len(index)}, H, W, C] to match {index_path.name}"
        )
    labels = index["label"].to_numpy(dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
        raise ValueError(f"{index_path}: labels outside 0..{len(names) - 1}")
    return PreparedSplit(
        split=split,
        images=images,
        labels=labels,
        votes=_columns(index, "votes_", names, index_path),
        soft_targets=_columns(index, "target_", names, index_path),
        ids=index[ID_COLUMN].to_numpy(dtype=str),
        sources=index["source"].to_numpy(dtype=str),
        class_names=names,
    )


def create_images(path: Path, count: int, size: tuple[int, int], channels: int) -> int:
    """Create ``path`` as a zeroed uint8 ``[count, H, W, C]`` .npy; return its data offset
    (writers fill rows with ``os.pwrite`` at ``offset + row * H * W * C``)."""
    array = np.lib.format.open_memmap(
        path, mode="w+", dtype=np.uint8, shape=(count, *size, channels)
    )
    offset = array.offset
    del array
    return offset


def drop_rows(path: Path, bad: Sequence[int], chunk: int = 4096) -> None:
    """Rewrite the .npy at ``path`` without rows ``bad`` (streaming, atomically)."""
    source = np.load(path, mmap_mode="r")
    keep = np.setdiff1d(np.arange(len(source)), np.asarray(bad, dtype=np.int64))
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=source.dtype, shape=(len(keep), *source.shape[1:])
        )
        for start in range(0, len(keep), chunk):
            out[start : start + chunk] = source[keep[start : start + chunk]]
        out.flush()
        del out, source


def write_index(
    path: Path,
    ids: Sequence[str],
    sources: Sequence[str],
    labels: Sequence[int],
    class_names: Sequence[str],
    votes: np.ndarray | None = None,
    vote_names: Sequence[str] | None = None,
    targets: np.ndarray | None = None,
) -> None:
    """Write ``<split>.csv``: id, source, label, then ``votes_<name>`` and ``target_<class>``."""
    columns: dict[str, object] = {
        ID_COLUMN: list(ids),
        "source": list(sources),
        "label": list(labels),
    }
    if votes is not None and vote_names is not None:
        integral = np.all(votes == np.round(votes))
        for j, name in enumerate(vote_names):
            columns[f"votes_{name}"] = votes[:, j].astype(np.int64) if integral else votes[:, j]
    if targets is not None:
        for j, name in enumerate(class_names):
            columns[f"target_{name}"] = targets[:, j]
    pd.DataFrame(columns).to_csv(path, index=False)


def data_checksum(manifest: Mapping[str, Any]) -> str:
    """One sha256 over the per-file checksums a prepared dataset's manifest lists: the
    dataset's identity (MLflow tags, study and ablation names, resumable training)."""
    checksums = manifest.get("checksums")
    if not isinstance(checksums, Mapping) or not checksums:
        raise ValueError("manifest has no 'checksums' mapping")
    blob = json.dumps(dict(checksums), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def write_manifest(root: Path, manifest: dict) -> None:
    """Write ``manifest.json`` with the sha256 of every other file in ``root``."""
    manifest = dict(manifest)
    manifest["checksums"] = {
        p.name: sha256(p) for p in sorted(root.iterdir()) if p.is_file() and p.name != MANIFEST
    }
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _columns(
    index: pd.DataFrame, prefix: str, names: Sequence[str], path: Path
) -> np.ndarray | None:
    wanted = [f"{prefix}{n}" for n in names]
    present = [c for c in wanted if c in index.columns]
    if not present:
        return None
    if len(present) != len(wanted):
        raise ValueError(f"{path}: has {present} but not {sorted(set(wanted) - set(present))}")
    return index[wanted].to_numpy(dtype=np.float32)  # [N, K]
