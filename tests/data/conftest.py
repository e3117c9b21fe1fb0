"""Writers of tiny raw datasets in the exact published formats, shared by the reader, prepare
and prepared-format tests."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

VOTES_HEADER = (
    "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
)


def write_fer_pair(
    root: Path,
    usages: list[str],
    votes: list[list[int]],
    names: list[str] | None = None,
    icml: bool = False,
    newline: str = "\n",
    seed: int = 0,
) -> tuple[Path, Path, np.ndarray]:
    """fer2013.csv (or icml_face_data.csv) + fer2013new.csv; returns both paths and the images
    ``[N, 48, 48]``."""
    root.mkdir(parents=True, exist_ok=True)
    images = np.random.default_rng(seed).integers(0, 256, (len(usages), 48, 48), dtype=np.uint8)
    names = names if names is not None else [f"fer{i:07d}.png" for i in range(len(usages))]
    pixels = root / ("icml_face_data.csv" if icml else "fer2013.csv")
    lines = ["emotion, Usage, pixels" if icml else "emotion,pixels,Usage"]
    for i, (usage, image) in enumerate(zip(usages, images, strict=True)):
        text = " ".join(map(str, image.reshape(-1).tolist()))
        lines.append(f"{i % 7}, {usage}, {text}" if icml else f"{i % 7},{text},{usage}")
    pixels.write_bytes((newline.join(lines) + newline).encode())
    vote_lines = [VOTES_HEADER] + [
        f"{u},{n},{','.join(map(str, v))}" for u, n, v in zip(usages, names, votes, strict=True)
    ]
    vote_file = root / "fer2013new.csv"
    vote_file.write_bytes((newline.join(vote_lines) + newline).encode())
    return pixels, vote_file, images


def small_fer_votes() -> tuple[list[str], list[list[int]], list[str]]:
    """12 rows covering the cases: clear majorities, a no-majority row, a not-a-face row."""
    usages = ["Training"] * 6 + ["PublicTest"] * 3 + ["PrivateTest"] * 3
    votes = [
        [10, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # neutral
        [0, 9, 1, 0, 0, 0, 0, 0, 0, 0],  # happiness
        [0, 0, 4, 0, 0, 0, 4, 0, 2, 0],  # surprise/fear: no majority, soft target in CE
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # not a face (empty name)
        [0, 0, 0, 8, 2, 0, 0, 0, 0, 0],  # sadness
        [0, 0, 0, 0, 0, 0, 0, 7, 3, 0],  # contempt
        [6, 4, 0, 0, 0, 0, 0, 0, 0, 0],  # neutral
        [0, 0, 0, 0, 7, 3, 0, 0, 0, 0],  # anger
        [0, 0, 0, 0, 0, 0, 0, 0, 10, 0],  # unknown: dropped
        [0, 0, 9, 1, 0, 0, 0, 0, 0, 0],  # surprise
        [0, 0, 0, 0, 0, 0, 8, 0, 2, 0],  # fear
        [0, 0, 0, 0, 0, 8, 0, 0, 1, 1],  # disgust
    ]
    names = [f"fer{i:07d}.png" for i in range(12)]
    names[3] = ""
    return usages, votes, names


def write_image(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def random_rgb(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    # Smooth images survive JPEG well enough to compare loosely.
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def write_rafdb(
    root: Path, entries: list[tuple[str, int]], newline: str = "\n", seed: int = 0
) -> Path:
    """RAF-DB basic/ with aligned 100x100 and original images for ``(name, label 1..7)``."""
    rng = np.random.default_rng(seed)
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    text = newline.join(f"{name} {label}" for name, label in entries) + newline
    (root / "EmoLabel" / "list_patition_label.txt").write_bytes(text.encode())
    for name, _ in entries:
        stem = Path(name).stem
        write_image(root / "Image" / "aligned" / f"{stem}_aligned.jpg", random_rgb(rng, 100, 100))
        write_image(root / "Image" / "original" / name, random_rgb(rng, 120, 90))
    return root


def rafdb_entries(per_class_train: int = 5, per_class_test: int = 2) -> list[tuple[str, int]]:
    entries, n_train, n_test = [], 0, 0
    for label in range(1, 8):
        for _ in range(per_class_train):
            n_train += 1
            entries.append((f"train_{n_train:05d}.jpg", label))
        for _ in range(per_class_test):
            n_test += 1
            entries.append((f"test_{n_test:04d}.jpg", label))
    return entries


AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
    "expression,valence,arousal"
)


def write_affectnet(
    root: Path,
    train: list[tuple[str, tuple[int, int, int, int], int]],
    valid: list[tuple[str, tuple[int, int, int, int], int]],
    validation_header: bool = False,
    seed: int = 0,
) -> Path:
    """Original release: file lists (validation.csv header-less by default) and 64x80 photos."""
    rng = np.random.default_rng(seed)
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True, exist_ok=True)
    landmarks = ";".join(str(v) for v in range(136))
    for name, rows, header in (
        ("training.csv", train, True),
        ("validation.csv", valid, validation_header),
    ):
        lines = [AFFECTNET_HEADER] if header else []
        for rel, (x, y, w, h), code in rows:
            lines.append(f"{rel},{x},{y},{w},{h},{landmarks},{code},0.1,-0.2")
            image = root / "Manually_Annotated_Images" / rel
            if not image.exists():
                write_image(image, random_rgb(rng, 80, 64))
        (lists / name).write_text("\n".join(lines) + "\n")
    return root


def write_affectnet_compact(root: Path, codes: dict[str, list[int]], seed: int = 0) -> Path:
    """Compact release: ``<set>/images/<i>.jpg`` + ``<set>/annotations/<i>_exp.npy`` (string)."""
    rng = np.random.default_rng(seed)
    for folder, values in codes.items():
        for i, code in enumerate(values):
            write_image(root / folder / "images" / f"{i}.jpg", random_rgb(rng, 96, 96))
            notes = root / folder / "annotations"
            notes.mkdir(parents=True, exist_ok=True)
            np.save(notes / f"{i}_exp.npy", np.array(str(code)))
    return root


def write_folder(root: Path, layout: dict[str, dict[str, int]], seed: int = 0) -> Path:
    """``<root>/<split>/<class>/<i>.png`` with ``layout[split][class]`` images each."""
    rng = np.random.default_rng(seed)
    for split, classes in layout.items():
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                write_image(root / split / name / f"{i}.png", random_rgb(rng, 40, 50))
    return root


def verify_checksums(root: Path) -> None:
    """Raise ValueError naming every file whose sha256 differs from the manifest's."""
    from psr.data.prepared import read_manifest
    from psr.fileio import sha256

    checksums = read_manifest(root).get("checksums", {})
    changed = [name for name, digest in checksums.items() if sha256(root / name) != digest]
    if changed:
        raise ValueError(f"{root}: files changed since prepare (sha256 differs): {changed}")


@pytest.fixture
def raw() -> SimpleNamespace:
    """The writers above, as ``raw.write_fer_pair(...)`` etc."""
    return SimpleNamespace(
        write_fer_pair=write_fer_pair,
        small_fer_votes=small_fer_votes,
        write_image=write_image,
        random_rgb=random_rgb,
        write_rafdb=write_rafdb,
        rafdb_entries=rafdb_entries,
        write_affectnet=write_affectnet,
        write_affectnet_compact=write_affectnet_compact,
        write_folder=write_folder,
        verify_checksums=verify_checksums,
    )
