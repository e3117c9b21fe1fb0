"""Any supported source -> the prepared format, decoding and resizing in parallel.

Readers yield lightweight records; worker processes load chunks of them and write the pixels
straight into each split's ``.npy`` (created with ``np.lib.format.open_memmap``), so no process
ever holds the decoded dataset. Everything is written into a temporary folder that replaces
``<out>/<name>`` only when complete.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from psr.data.affectnet import open_affectnet, open_affectnet_compact
from psr.data.ferplus import VoteMode, open_ferplus
from psr.data.folder import open_folder
from psr.data.prepared import (
    MANIFEST,
    SPLITS,
    create_images,
    drop_rows,
    write_index,
    write_manifest,
)
from psr.data.rafdb import open_rafdb
from psr.data.records import (
    BadImage,
    DatasetSource,
    ImageRef,
    Record,
    Skipped,
    load_images,
    no_training_images,
)
from psr.data.sources import check_source
from psr.faults import failpoint
from psr.fileio import atomic_directory
from psr.progress import progress_bar

log = logging.getLogger(__name__)

# Settings that change how fast, not what is written: kept out of the manifest so that the
# same inputs give byte-identical outputs on any machine (DVC hashes them).
_EXECUTION_ONLY = {"workers", "chunk_size", "progress"}
DEFAULT_SIZE = 100  # RAF-DB's aligned size, the paper's S for RAF-DB; used when sizes vary
FORMAT_VERSION = 1


class PrepareConfig(BaseModel):
    """How to turn one raw dataset into a prepared one; defaults follow the paper."""

    model_config = ConfigDict(extra="forbid")

    dataset: Literal["ferplus", "rafdb", "affectnet", "affectnet_compact", "folder"]
    source: Path
    name: str | None = Field(None, description="output folder name; default: the dataset")
    votes: Path | None = Field(None, description="FER+ vote file; default <source>/fer2013new.csv")
    image_size: int | None = Field(
        None, gt=0, description="square output side; default the native size (FER+ 48), else 100"
    )
    vote_mode: VoteMode = Field(
        "crossentropy",
        description="FER+ training targets: official = the PSR code's raw 8-emotion vote "
        "proportions (with soft_ce, the paper's recipe); crossentropy, probability, majority, "
        "multi_target = Microsoft's modes; validation uses majority (official: its proportions)",
    )
    num_classes: int | None = Field(
        None, description="7 or 8; default 8 for FER+/AffectNet, 7 for RAF-DB, folder: inferred"
    )
    rafdb_images: Literal["aligned", "original"] = "aligned"
    n_folds: int = Field(5, ge=2, description="validation = one fold of a stratified split")
    fold: int = Field(0, ge=0)
    valid_fraction: float | None = Field(
        None, gt=0, lt=1, description="instead of folds: a stratified holdout of this share"
    )
    valid_per_class: int | None = Field(
        None,
        ge=1,
        description="instead of folds: a seeded class-balanced validation set of this many "
        "training images per class (the official AffectNet recipe: 1000)",
    )
    seed: int = 0
    face_margin: float = Field(0.0, ge=0, description="AffectNet: box widened by this fraction")
    align_faces: bool = Field(
        False,
        description="detect the largest face in each image (MTCNN) and align it by its five "
        "landmarks, as psr predict does; for datasets of whole photos (an image without a face "
        "is skipped). Off: RAF-DB aligned, FER+ and AffectNet crops are already framed",
    )
    workers: int | None = Field(None, ge=0, description="decoding processes; 0 = in process")
    chunk_size: int = Field(256, gt=0, description="images per task")
    max_bad_fraction: float = Field(
        0.01, ge=0, le=1, description="fail when more images than this share are unusable"
    )
    progress: bool = True


def open_source(cfg: PrepareConfig) -> DatasetSource:
    """The reader for ``cfg.dataset``, with the options that apply to it."""
    split = {"seed": cfg.seed, "n_folds": cfg.n_folds, "fold": cfg.fold}
    split["valid_fraction"] = cfg.valid_fraction  # type: ignore[assignment]
    split["valid_per_class"] = cfg.valid_per_class  # type: ignore[assignment]
    if cfg.dataset == "ferplus":
        return open_ferplus(cfg.source, cfg.vote_mode, cfg.num_classes or 8, cfg.votes)
    if cfg.dataset == "rafdb":
        return open_rafdb(cfg.source, cfg.num_classes or 7, cfg.rafdb_images, **split)
    if cfg.dataset == "affectnet":
        return open_affectnet(cfg.source, cfg.num_classes or 8, cfg.face_margin, **split)
    if cfg.dataset == "affectnet_compact":
        return open_affectnet_compact(cfg.source, cfg.num_classes or 8, **split)
    return open_folder(cfg.source, cfg.num_classes, **split)


def prepare(cfg: PrepareConfig, out_root: str | Path) -> Path:
    """Prepare ``cfg``'s dataset into ``<out_root>/<name>/`` and return that folder."""
    check_source(cfg.dataset, cfg.source, cfg.votes, cfg.rafdb_images)
    if cfg.align_faces:  # fail now, not once per image in the workers
        from psr.detect_mtcnn import mtcnn_model_dir

        mtcnn_model_dir()
    source = open_source(cfg)
    records, skipped = _collect(source.records, cfg.progress)
    side = cfg.image_size
    size = (side, side) if side else source.native_size or (DEFAULT_SIZE, DEFAULT_SIZE)
    target = Path(out_root) / (cfg.name or cfg.dataset)
    with atomic_directory(target, marker=MANIFEST) as tmp:
        bad = _decode(records, tmp, size, source.channels, cfg)
        _check_bad_share(bad, skipped, sum(map(len, records.values())), cfg.max_bad_fraction)
        splits = {
            split: _finish_split(tmp, split, recs, [row for row, _ in bad[split]], source)
            for split, recs in records.items()
        }
        skipped += [
            Skipped(split, records[split][row].source, why)
            for split, items in bad.items()
            for row, why in items
        ]
        write_manifest(
            tmp,
            {
                "format": FORMAT_VERSION,
                "name": target.name,
                "dataset": source.dataset,
                "protocol": source.protocol,
                "class_names": list(source.class_names),
                "image_size": list(size),
                "channels": source.channels,
                "splits": splits,
                "vote_names": list(source.vote_names) if source.vote_names else None,
                "source": source.files,
                "config": cfg.model_dump(mode="json", exclude=_manifest_exclusions(cfg)),
                "skipped": [dataclasses.asdict(s) for s in skipped],
            },
        )
    return target


def _manifest_exclusions(cfg: PrepareConfig) -> set[str]:
    # align_faces is recorded only when on, so the manifests (and DVC hashes) of datasets
    # prepared before the option existed stay byte-identical.
    return _EXECUTION_ONLY | (set() if cfg.align_faces else {"align_faces"})


def _finish_split(
    root: Path, split: str, recs: list[Record], bad_rows: list[int], source: DatasetSource
) -> dict[str, object]:
    """Drop the unusable rows from ``<split>.npy``, write ``<split>.csv``; return the split's
    manifest entry (count and images per class)."""
    if bad_rows:
        drop_rows(root / f"{split}.npy", bad_rows)
        dropped = set(bad_rows)
        recs = [r for i, r in enumerate(recs) if i not in dropped]
    _write_split_index(root / f"{split}.csv", recs, source)
    per_class = np.bincount([r.label for r in recs], minlength=len(source.class_names))
    return {
        "count": len(recs),
        "per_class": dict(zip(source.class_names, per_class.tolist(), strict=True)),
    }


def _collect(
    stream: Iterable[Record | Skipped], progress: bool
) -> tuple[dict[str, list[Record]], list[Skipped]]:
    """Records grouped by split in the official order, and the rows a reader rejected."""
    grouped: dict[str, list[Record]] = defaultdict(list)
    skipped: list[Skipped] = []
    rows = progress_bar(stream, desc="prepare: index", unit="row", enabled=progress, leave=False)
    for item in rows:
        if isinstance(item, Skipped):
            skipped.append(item)
        else:
            grouped[item.split].append(item)
    unknown = set(grouped) - set(SPLITS)
    if unknown:
        raise ValueError(f"reader produced unknown split(s) {sorted(unknown)}")
    if not grouped.get("train"):
        raise no_training_images("training images in the source", skipped)
    return {s: grouped[s] for s in SPLITS if grouped.get(s)}, skipped


Task = tuple[str, str, int, int, Sequence[ImageRef], tuple[int, int], int, bool]


def _decode(
    records: dict[str, list[Record]],
    root: Path,
    size: tuple[int, int],
    channels: int,
    cfg: PrepareConfig,
) -> dict[str, list[tuple[int, str]]]:
    """Fill ``<split>.npy`` for every split; return the (row, reason) of each unusable image."""
    tasks: list[Task] = []
    for split, recs in records.items():
        path = root / f"{split}.npy"
        offset = create_images(path, len(recs), size, channels)
        for first in range(0, len(recs), cfg.chunk_size):
            refs = [r.image for r in recs[first : first + cfg.chunk_size]]
            tasks.append((split, str(path), offset, first, refs, size, channels, cfg.align_faces))
    bad: dict[str, list[tuple[int, str]]] = {split: [] for split in records}
    workers = (os.cpu_count() or 1) if cfg.workers is None else cfg.workers
    total = sum(len(recs) for recs in records.values())
    bar = progress_bar(total=total, desc="prepare: decode", unit="img", enabled=cfg.progress)
    with bar:
        for split, count, failures in _run(tasks, workers):
            bad[split].extend(failures)
            bar.update(count)
            failpoint("prepare.chunk_decoded")
    for failures in bad.values():
        for _, reason in failures:
            log.warning("skipped: %s", reason)
    return {s: sorted((row, reason) for row, reason in f) for s, f in bad.items()}


def _run(tasks: list[Task], workers: int) -> Iterator[tuple[str, int, list[tuple[int, str]]]]:
    if workers <= 1 or len(tasks) <= 1:
        yield from map(_decode_chunk, tasks)
        return
    processes = min(workers, len(tasks))
    # forkserver, not fork: forking a process that runs threads (tqdm's monitor, OpenCV's pool)
    # can copy a held lock into the child and hang it.
    with multiprocessing.get_context("forkserver").Pool(
        processes, initializer=_init_worker
    ) as pool:
        yield from pool.imap_unordered(_decode_chunk, tasks)


def _init_worker() -> None:
    # One OpenCV thread per worker: the processes already use every core.
    cv2.setNumThreads(1)


def _decode_chunk(task: Task) -> tuple[str, int, list[tuple[int, str]]]:
    """Load one chunk and write it into rows ``first..`` of its .npy with one positioned write;
    unusable images stay zero and are returned as (row, reason)."""
    split, path, offset, first, refs, size, channels, align = task
    images = load_images(refs, size, channels, align=align)
    chunk = np.zeros((len(refs), *size, channels), dtype=np.uint8)  # [n, H, W, C]
    failures = []
    for k, image in enumerate(images):
        if isinstance(image, BadImage):
            failures.append((first + k, str(image)))
        else:
            chunk[k] = image
    data = memoryview(chunk).cast("B")
    position = offset + first * chunk[0].nbytes
    fd = os.open(path, os.O_WRONLY)
    try:
        written = 0
        while written < len(data):
            written += os.pwrite(fd, data[written:], position + written)
    finally:
        os.close(fd)
    return split, len(refs), failures


def _check_bad_share(
    bad: dict[str, list[tuple[int, str]]], skipped: list[Skipped], decoded: int, limit: float
) -> None:
    reasons = [s.reason for s in skipped] + [
        reason for items in bad.values() for _, reason in items
    ]
    total = decoded + len(skipped)
    if not reasons:
        return
    share = len(reasons) / total
    if share > limit:
        shown = "\n  ".join(reasons[:20])
        more = f"\n  ... and {len(reasons) - 20} more" if len(reasons) > 20 else ""
        raise ValueError(
            f"{len(reasons)} of {total} images are unusable ({share:.2%} > max_bad_fraction"
            f" {limit:.2%}):\n  {shown}{more}"
        )
    log.warning(
        "%d of %d images unusable and skipped (listed in the manifest)", len(reasons), total
    )


def _write_split_index(path: Path, recs: list[Record], source: DatasetSource) -> None:
    has_votes = bool(recs) and recs[0].votes is not None and source.vote_names is not None
    has_targets = bool(recs) and recs[0].target is not None
    write_index(
        path,
        ids=[r.id for r in recs],
        sources=[r.source for r in recs],
        labels=[r.label for r in recs],
        class_names=source.class_names,
        votes=np.array([r.votes for r in recs], dtype=np.float64) if has_votes else None,
        vote_names=source.vote_names,
        targets=np.array([r.target for r in recs], dtype=np.float64) if has_targets else None,
    )
