"""Write synthetic pictures in the exact on-disk formats of the public datasets (docs/datasets.md).

Each writer builds the whole dataset in a temporary sibling directory and renames it into place at
the end, so a crash never leaves a half-written dataset. Every format also gets ``generation.csv``
at its root: one row per picture with the generation parameters (true expression, intensity, face
size, rotation, occlusion, ...) and the raw crowd votes. Its ``id`` column is exactly the id the
format's reader gives the picture in the prepared dataset (``sample_id`` of ``psr.data.ferplus``
and ``psr.data.rafdb``, the AffectNet list path, the folder-relative path), so evaluation joins on
it; the format's own key columns (``row``/``Image name``, ``name``, ...) follow it.

Labels per format:
- ferplus: ``fer2013new.csv`` carries the 10 crowd votes. ``fer2013.csv``'s 7-class ``emotion`` is
  the true expression in FER2013 order; FER2013 has no contempt, so contempt maps to
  :data:`FER2013_CONTEMPT` (disgust: its closest FER2013 class, both "moral rejection" emotions).
  Not-a-face rows get the FER2013 class of their most-voted emotion.
- rafdb, folder: the crowd's majority among the format's classes (a human label, like RAF-DB's).
- affectnet: one annotator's vote (AffectNet has one label per picture); ``unknown`` becomes
  9 Uncertain, not-a-face pictures 10 No-Face, and a small share of faces 8 None.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from psr.data.ferplus import sample_id as ferplus_id
from psr.data.labels import DATASET_ORDERS, EXPRESSIONS
from psr.data.prepared import ID_COLUMN
from psr.data.rafdb import sample_id as rafdb_id
from psr.data.synthetic.config import SynthConfig
from psr.data.synthetic.crowd import VOTE_COLUMNS
from psr.data.synthetic.generator import (
    CropView,
    PhotoView,
    Sample,
    View,
    render_sample,
    split_expressions,
    split_id,
)
from psr.fileio import atomic_directory
from psr.progress import Bar, progress_bar

FORMATS: tuple[str, ...] = ("ferplus", "rafdb", "affectnet", "folder")
GENERATION_FILE = "generation.csv"
FER2013_CONTEMPT = "disgust"
FERPLUS_USAGE = {"train": "Training", "valid": "PublicTest", "test": "PrivateTest"}
FERPLUS_HEADER = "Usage,Image name," + ",".join(VOTE_COLUMNS)
AFFECTNET_COLUMNS = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,"
    "valence,arousal"
)
AFFECTNET_NONE, AFFECTNET_UNCERTAIN, AFFECTNET_NO_FACE = 8, 9, 10
RAFDB_ALIGNED_SIZE = 100
_STORE_QUALITY = 95  # JPEG quality of stored files (in-the-wild artefacts come before this)
_CHUNK = 256
_IN_FLIGHT = 8  # chunks submitted ahead of the writer, bounding memory with worker processes
_AFFECT_STREAM = 0xAFF3
_PIXEL_TEXT = np.array([str(i) for i in range(256)], dtype=object)

# Circumplex position (valence, arousal) of each expression at full intensity.
_VALENCE_AROUSAL = {
    "neutral": (0.0, 0.0),
    "happiness": (0.75, 0.45),
    "surprise": (0.2, 0.75),
    "sadness": (-0.65, -0.3),
    "anger": (-0.6, 0.65),
    "disgust": (-0.65, 0.35),
    "fear": (-0.55, 0.75),
    "contempt": (-0.4, 0.3),
}


@dataclass(frozen=True)
class _Layout:
    view: View
    classes: tuple[str, ...]
    not_a_face: bool  # whether the format has not-a-face pictures


def _layout(fmt: str, cfg: SynthConfig) -> _Layout:
    if fmt == "ferplus":
        return _Layout(CropView(48, gray=True), EXPRESSIONS, True)
    if fmt == "rafdb":
        classes = tuple(c for c in EXPRESSIONS if c in DATASET_ORDERS["rafdb"])
        return _Layout(PhotoView(cfg.photo_min_side), classes, False)
    if fmt == "affectnet":
        return _Layout(PhotoView(cfg.photo_min_side), EXPRESSIONS, True)
    if fmt == "folder":
        return _Layout(CropView(cfg.folder_image_size, gray=False), EXPRESSIONS, False)
    raise ValueError(f"unknown format {fmt!r}; known: {FORMATS}")


# ---------------------------------------------------------------- encoding (runs in workers)


def _encode_image(ext: str, image: np.ndarray) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, _STORE_QUALITY] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, image, params)
    if not ok:
        raise RuntimeError(f"OpenCV failed to encode a {ext} image")
    return buf.tobytes()


def _hard_label(votes: np.ndarray, classes: Sequence[str], fallback: str) -> str:
    """The most-voted of ``classes`` (ties: FER+ column order); ``fallback`` if none got a vote."""
    counts = [votes[VOTE_COLUMNS.index(c)] for c in classes]
    return classes[int(np.argmax(counts))] if max(counts) > 0 else fallback


def _aligned(sample: Sample, size: int) -> np.ndarray:
    """RAF-DB-style aligned crop: face upright and centred, face box filling ~87%."""
    scale = size / 2 / 1.15
    to_aligned = np.array([[scale, 0, size / 2], [0, scale, size / 2], [0, 0, 1]])
    to_photo = np.vstack([sample.matrix, [0, 0, 1]])
    aligned_to_photo = (to_photo @ np.linalg.inv(to_aligned))[:2]
    return cv2.warpAffine(
        sample.image,
        aligned_to_photo,
        (size, size),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


def _affectnet_annotation(cfg: SynthConfig, sample: Sample) -> dict[str, object]:
    """One annotator's label, valence and arousal, face box clipped to the photo, landmarks."""
    split, index = str(sample.params["split"]), int(sample.params["index"])
    rng = np.random.default_rng([_AFFECT_STREAM, cfg.seed, split_id(split), index])
    vote = VOTE_COLUMNS[rng.choice(len(VOTE_COLUMNS), p=sample.votes / sample.votes.sum())]
    if sample.expression is None:
        code = AFFECTNET_NO_FACE
    elif rng.uniform() < cfg.affectnet_none_rate:
        code = AFFECTNET_NONE
    elif vote in DATASET_ORDERS["affectnet"]:
        code = DATASET_ORDERS["affectnet"].index(vote)
    else:
        code = AFFECTNET_UNCERTAIN
    if code in (AFFECTNET_UNCERTAIN, AFFECTNET_NO_FACE):
        valence = arousal = -2.0  # AffectNet's "not annotated"
    else:
        v, a = _VALENCE_AROUSAL[sample.expression or "neutral"]
        weight = 0.3 + 0.7 * float(sample.params["intensity"])
        valence, arousal = np.clip(np.array([v, a]) * weight + rng.normal(0, 0.12, 2), -1, 1)
    h, w = sample.image.shape[:2]
    x, y, bw, bh = sample.face_box
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + bw, w), min(y + bh, h)
    return {
        "box": (x0, y0, x1 - x0, y1 - y0),
        "landmarks": ";".join(f"{v:.2f}" for v in sample.landmarks.ravel()),
        "expression": code,
        "valence": float(valence),
        "arousal": float(arousal),
    }


def _encode(fmt: str, cfg: SynthConfig, sample: Sample, classes: Sequence[str]) -> dict:
    out: dict[str, object] = {"params": sample.params, "votes": sample.votes}
    if fmt == "ferplus":
        out["pixels"] = " ".join(_PIXEL_TEXT[sample.image.ravel()])
        emotions = sample.votes[: len(EXPRESSIONS)]
        name = sample.expression or EXPRESSIONS[int(np.argmax(emotions))]
        name = FER2013_CONTEMPT if name == "contempt" else name
        out["emotion"] = DATASET_ORDERS["fer2013"].index(name)
        out["face"] = sample.expression is not None
    elif fmt == "rafdb":
        out["original"] = _encode_image(".jpg", sample.image)
        out["aligned"] = _encode_image(".jpg", _aligned(sample, RAFDB_ALIGNED_SIZE))
        out["label"] = _hard_label(sample.votes, classes, str(sample.expression))
    elif fmt == "affectnet":
        out["jpg"] = _encode_image(".jpg", sample.image)
        out.update(_affectnet_annotation(cfg, sample))
    else:
        out["png"] = _encode_image(".png", sample.image)
        out["label"] = _hard_label(sample.votes, classes, str(sample.expression))
    return out


def _encode_chunk(job: tuple[str, SynthConfig, str, int, list[str]]) -> list[dict]:
    fmt, cfg, split, start, expressions = job
    layout = _layout(fmt, cfg)
    return [
        _encode(
            fmt,
            cfg,
            render_sample(cfg, split, start + k, e, layout.view, layout.not_a_face),
            layout.classes,
        )
        for k, e in enumerate(expressions)
    ]


def _records(
    fmt: str, cfg: SynthConfig, split: str, count: int, bar: Bar, pool: ProcessPoolExecutor | None
) -> Iterator[dict]:
    """Encoded pictures 0..count-1 of ``split``, in order (chunks may run in worker processes)."""
    layout = _layout(fmt, cfg)
    expressions = split_expressions(cfg.seed, split, count, cfg.class_balance, layout.classes)
    jobs = [(fmt, cfg, split, s, expressions[s : s + _CHUNK]) for s in range(0, count, _CHUNK)]
    for chunk in _map_bounded(pool, jobs):
        bar.update(len(chunk))
        yield from chunk


def _map_bounded(pool: ProcessPoolExecutor | None, jobs: list) -> Iterator[list[dict]]:
    """``map(_encode_chunk, jobs)`` in order, a few chunks in flight at most (bounded memory)."""
    if pool is None:
        yield from map(_encode_chunk, jobs)
        return
    window = _IN_FLIGHT
    pending = deque(pool.submit(_encode_chunk, job) for job in jobs[:window])
    for job in jobs[window:]:
        yield pending.popleft().result()
        pending.append(pool.submit(_encode_chunk, job))
    while pending:
        yield pending.popleft().result()


# ---------------------------------------------------------------- format writers (main process)


def _generation_row(sample_id: str, key: dict[str, object], record: dict) -> dict[str, object]:
    """``sample_id`` is the prepared id of the picture; ``key`` the format's own key columns."""
    votes = {f"votes_{c}": int(v) for c, v in zip(VOTE_COLUMNS, record["votes"], strict=True)}
    return {ID_COLUMN: sample_id, **key, **record["params"], **votes}


def _write_ferplus(root: Path, cfg: SynthConfig, records: dict[str, Iterator[dict]]) -> list[dict]:
    icml = cfg.fer2013_file == "icml_face_data.csv"
    generation: list[dict] = []
    row = 0
    with (
        open(root / cfg.fer2013_file, "w", newline="\n") as fer,
        open(root / "fer2013new.csv", "w", newline="\n") as ferplus,
    ):
        fer.write("emotion, Usage, pixels\n" if icml else "emotion,pixels,Usage\n")
        ferplus.write(FERPLUS_HEADER + "\n")
        for split, usage in FERPLUS_USAGE.items():
            for record in records[split]:
                if icml:
                    fer.write(f"{record['emotion']},{usage},{record['pixels']}\n")
                else:
                    fer.write(f"{record['emotion']},{record['pixels']},{usage}\n")
                name = f"fer{row:07d}.png" if record["face"] else ""
                ferplus.write(f"{usage},{name}," + ",".join(map(str, record["votes"])) + "\n")
                key = {"row": row, "Image name": name}
                generation.append(_generation_row(ferplus_id(row), key, record))
                row += 1
    return generation


def _write_rafdb(root: Path, cfg: SynthConfig, records: dict[str, Iterator[dict]]) -> list[dict]:
    if cfg.train + cfg.valid > 99_999 or cfg.test > 9_999:
        raise ValueError(
            "rafdb names allow at most 99,999 train (train + valid) and 9,999 test images"
        )
    original = root / "basic" / "Image" / "original"
    aligned = root / "basic" / "Image" / "aligned"
    labels_dir = root / "basic" / "EmoLabel"
    for d in (original, aligned, labels_dir):
        d.mkdir(parents=True)
    order = DATASET_ORDERS["rafdb"]
    lines: list[str] = []
    generation: list[dict] = []
    # RAF-DB has no validation split: validation pictures continue the train numbering.
    numbered = [("train", "train", 5), ("valid", "train", 5), ("test", "test", 4)]
    counters = {"train": 0, "test": 0}
    for split, prefix, digits in numbered:
        for record in records[split]:
            counters[prefix] += 1
            stem = f"{prefix}_{counters[prefix]:0{digits}d}"
            (original / f"{stem}.jpg").write_bytes(record["original"])
            (aligned / f"{stem}_aligned.jpg").write_bytes(record["aligned"])
            label = order.index(record["label"]) + 1
            lines.append(f"{stem}.jpg {label}\n")
            key = {"name": f"{stem}.jpg", "label": label}
            generation.append(_generation_row(rafdb_id(key["name"]), key, record))
    (labels_dir / "list_patition_label.txt").write_text("".join(lines), newline="\n")
    return generation


def _affectnet_row(path: str, record: dict, box: tuple[int, int, int, int]) -> str:
    x, y, w, h = box
    return (
        f"{path},{x},{y},{w},{h},{record['landmarks']},{record['expression']},"
        f"{record['valence']:.6f},{record['arousal']:.6f}\n"
    )


def _write_affectnet(
    root: Path, cfg: SynthConfig, records: dict[str, Iterator[dict]]
) -> list[dict]:
    lists = root / "Manually_Annotated_file_lists"
    images = root / "Manually_Annotated_Images"
    lists.mkdir(parents=True)
    generation: list[dict] = []
    bad_rows = 0
    # The official validation set serves as test; our train + valid make up training.csv.
    files = {"training.csv": ("train", "valid"), "validation.csv": ("test",)}
    for file_name, splits in files.items():
        rows: list[str] = []
        for split in splits:
            for record in records[split]:
                index = int(record["params"]["index"])
                subdir = f"{100 * split_id(split) + index // 1000 + 1}"
                path = f"{subdir}/{split}_{index:06d}.jpg"
                (images / subdir).mkdir(parents=True, exist_ok=True)
                (images / path).write_bytes(record["jpg"])
                rows.append(_affectnet_row(path, record, record["box"]))
                generation.append(_generation_row(path, {"subDirectory_filePath": path}, record))
                if file_name == "training.csv" and bad_rows < cfg.affectnet_bad_rows:
                    # A corrupt copy right after it: negative face sizes (seen in the real file).
                    x, y, w, h = record["box"]
                    rows.append(_affectnet_row(path, record, (x, y, -w, -h)))
                    bad_rows += 1
        header = AFFECTNET_COLUMNS + "\n" if file_name == "training.csv" else ""
        (lists / file_name).write_text(header + "".join(rows), newline="\n")
    return generation


def _write_folder(root: Path, cfg: SynthConfig, records: dict[str, Iterator[dict]]) -> list[dict]:
    generation: list[dict] = []
    for split in ("train", "valid", "test"):
        for name in EXPRESSIONS:
            (root / split / name).mkdir(parents=True)
        for record in records[split]:
            rel = f"{split}/{record['label']}/{split}_{int(record['params']['index']):06d}.png"
            (root / rel).write_bytes(record["png"])
            generation.append(_generation_row(rel, {"path": rel, "label": record["label"]}, record))
    return generation


_WRITERS = {
    "ferplus": _write_ferplus,
    "rafdb": _write_rafdb,
    "affectnet": _write_affectnet,
    "folder": _write_folder,
}


def write_dataset(
    fmt: str,
    out_dir: str | Path,
    cfg: SynthConfig | None = None,
    progress: bool = True,
    workers: int = 1,
) -> Path:
    """Write a synthetic dataset in format ``fmt`` (see FORMATS) to ``out_dir``; returns its path.

    ``workers > 1`` renders chunks in that many processes; the bytes do not depend on it.
    """
    cfg = cfg or SynthConfig()
    _layout(fmt, cfg)  # an unknown format fails before anything is created
    out = Path(out_dir)
    total = cfg.train + cfg.valid + cfg.test
    with (
        atomic_directory(out, marker=GENERATION_FILE) as tmp,
        progress_bar(total=total, desc=f"synth {fmt}", unit="img", enabled=progress) as bar,
        ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
        if workers > 1
        else _no_pool() as pool,
    ):
        records = {
            split: _records(fmt, cfg, split, cfg.count(split), bar, pool)
            for split in ("train", "valid", "test")
        }
        generation = _WRITERS[fmt](tmp, cfg, records)
        frame = pd.DataFrame(generation)
        frame.to_csv(tmp / GENERATION_FILE, index=False, lineterminator="\n")
    return out


@contextmanager
def _no_pool() -> Iterator[None]:
    yield None
