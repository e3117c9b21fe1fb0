"""On-disk formats written by the synthetic generator, parsed independently with pandas and cv2."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from psr.cli import main
from psr.data.labels import DATASET_ORDERS, EXPRESSIONS
from psr.data.synthetic import GENERATION_FILE, SynthConfig, write_dataset
from psr.data.synthetic import writers as writers_module

FERPLUS_HEADER = (
    "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
)
AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,"
    "valence,arousal"
)


def _cfg(**kw) -> SynthConfig:
    return SynthConfig(**{"train": 24, "valid": 8, "test": 8, **kw})


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _first_line(path: Path) -> str:
    with open(path, newline="") as f:
        return f.readline().rstrip("\n")


@pytest.mark.parametrize("fmt", ["ferplus", "rafdb", "affectnet", "folder"])
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, fmt):
    small = {"train": 6, "valid": 2, "test": 2}
    a = _files(write_dataset(fmt, tmp_path / "a", _cfg(seed=1, **small), progress=False))
    b = _files(write_dataset(fmt, tmp_path / "b", _cfg(seed=1, **small), progress=False))
    c = _files(write_dataset(fmt, tmp_path / "c", _cfg(seed=2, **small), progress=False))
    assert a == b
    assert a[GENERATION_FILE] != c[GENERATION_FILE]
    assert sum(a[name] != c.get(name) for name in a) >= len(a) // 2


@pytest.mark.slow
def test_worker_processes_write_the_same_bytes(tmp_path):
    cfg = _cfg(train=600, valid=10, test=10)  # several chunks
    one = write_dataset("ferplus", tmp_path / "one", cfg, progress=False, workers=1)
    two = write_dataset("ferplus", tmp_path / "two", cfg, progress=False, workers=2)
    assert _files(one) == _files(two)


def test_ferplus_format(tmp_path):
    cfg = _cfg(not_a_face_rate=0.15)
    root = write_dataset("ferplus", tmp_path / "fer", cfg, progress=False)
    assert _first_line(root / "fer2013.csv") == "emotion,pixels,Usage"
    assert _first_line(root / "fer2013new.csv") == FERPLUS_HEADER
    fer = pd.read_csv(root / "fer2013.csv")
    new = pd.read_csv(root / "fer2013new.csv", keep_default_na=False)
    assert len(fer) == len(new) == 40
    usage = {"Training": 24, "PublicTest": 8, "PrivateTest": 8}
    assert fer["Usage"].value_counts().to_dict() == usage
    assert (fer["Usage"] == new["Usage"]).all()
    assert fer["Usage"].tolist() == ["Training"] * 24 + ["PublicTest"] * 8 + ["PrivateTest"] * 8
    assert fer["emotion"].between(0, 6).all()
    for text in fer["pixels"]:
        values = np.array(text.split(), dtype=int)
        assert values.size == 2304 and values.min() >= 0 and values.max() <= 255

    votes = new.iloc[:, 2:].to_numpy()
    assert (votes.sum(axis=1) == 10).all() and votes.min() >= 0
    faces = new["Image name"] != ""
    assert 0 < (~faces).sum() < 40  # some not-a-face rows, with an empty name
    for row, name in enumerate(new["Image name"]):
        assert name in ("", f"fer{row:07d}.png")
    assert (votes[~faces.to_numpy(), -1] >= 5).mean() > 0.7  # mostly voted NF

    generation = pd.read_csv(root / GENERATION_FILE, keep_default_na=False)
    assert generation["row"].tolist() == list(range(40))
    assert (generation["Image name"] == new["Image name"]).all()
    # fer2013's emotion is the true expression in FER2013 order, contempt -> disgust.
    fer2013 = DATASET_ORDERS["fer2013"]
    for emotion, truth in zip(fer["emotion"], generation["true_label"], strict=True):
        if truth != "not_a_face":
            assert fer2013[emotion] == ("disgust" if truth == "contempt" else truth)


def test_ferplus_icml_variant(tmp_path):
    root = write_dataset(
        "ferplus", tmp_path / "icml", _cfg(fer2013_file="icml_face_data.csv"), progress=False
    )
    assert not (root / "fer2013.csv").exists()
    assert _first_line(root / "icml_face_data.csv") == "emotion, Usage, pixels"
    icml = pd.read_csv(root / "icml_face_data.csv")
    assert list(icml.columns) == ["emotion", " Usage", " pixels"]
    assert len(icml) == 40 and icml[" Usage"].iloc[0] == "Training"
    assert len(icml[" pixels"].iloc[0].split()) == 2304


def test_rafdb_format(tmp_path):
    root = write_dataset("rafdb", tmp_path / "raf", _cfg(), progress=False)
    label_file = root / "basic" / "EmoLabel" / "list_patition_label.txt"
    lines = label_file.read_text().splitlines()
    assert len(lines) == 40
    names = [line.split()[0] for line in lines]
    labels = [int(line.split()[1]) for line in lines]
    assert all(re.fullmatch(r"train_\d{5}\.jpg|test_\d{4}\.jpg", n) for n in names)
    assert sum(n.startswith("train_") for n in names) == 32  # train + valid (no valid split)
    assert names[0] == "train_00001.jpg" and "test_0008.jpg" in names
    assert set(labels) <= set(range(1, 8))
    for name in names:
        original = cv2.imread(str(root / "basic" / "Image" / "original" / name))
        assert original is not None and min(original.shape[:2]) >= 160
        aligned_path = root / "basic" / "Image" / "aligned" / f"{Path(name).stem}_aligned.jpg"
        aligned = cv2.imread(str(aligned_path), cv2.IMREAD_UNCHANGED)
        assert aligned.shape == (100, 100, 3)
    generation = pd.read_csv(root / GENERATION_FILE)
    assert generation["name"].tolist() == names
    assert "contempt" not in set(generation["true_label"])
    raf = DATASET_ORDERS["rafdb"]
    assert [raf[v - 1] for v in labels] == [raf[v - 1] for v in generation["label"]]


def test_affectnet_format(tmp_path):
    cfg = _cfg(not_a_face_rate=0.2, affectnet_bad_rows=3)
    root = write_dataset("affectnet", tmp_path / "aff", cfg, progress=False)
    lists = root / "Manually_Annotated_file_lists"
    assert _first_line(lists / "training.csv") == AFFECTNET_HEADER
    train = pd.read_csv(lists / "training.csv")
    valid = pd.read_csv(lists / "validation.csv", header=None, names=train.columns)
    assert not _first_line(lists / "validation.csv").startswith("subDirectory_filePath")
    assert len(train) == 32 + 3 and len(valid) == 8
    bad = (train["face_width"] < 0) | (train["face_height"] < 0)
    assert bad.sum() == 3
    for frame in (train[~bad], valid):
        assert frame["expression"].between(0, 10).all()
        for _, row in frame.iterrows():
            image = cv2.imread(
                str(root / "Manually_Annotated_Images" / row["subDirectory_filePath"])
            )
            h, w = image.shape[:2]
            assert row["face_x"] >= 0 and row["face_x"] + row["face_width"] <= w
            assert row["face_y"] >= 0 and row["face_y"] + row["face_height"] <= h
            assert row["face_width"] > 0 and row["face_height"] > 0
            assert len(str(row["facial_landmarks"]).split(";")) == 136
            unannotated = row["expression"] in (9, 10)
            for value in (row["valence"], row["arousal"]):
                assert value == -2 if unannotated else -1 <= value <= 1
    assert (train["expression"] == 10).any() or (valid["expression"] == 10).any()
    generation = pd.read_csv(root / GENERATION_FILE)
    paths = pd.concat([train[~bad], valid])["subDirectory_filePath"].tolist()
    assert generation["subDirectory_filePath"].tolist() == paths


def test_folder_format(tmp_path):
    root = write_dataset("folder", tmp_path / "folder", _cfg(), progress=False)
    for split, count in (("train", 24), ("valid", 8), ("test", 8)):
        assert sorted(p.name for p in (root / split).iterdir()) == sorted(EXPRESSIONS)
        images = sorted((root / split).glob("*/*.png"))
        assert len(images) == count
        assert cv2.imread(str(images[0]), cv2.IMREAD_UNCHANGED).shape == (48, 48, 3)
    generation = pd.read_csv(root / GENERATION_FILE)
    assert len(generation) == 40
    for path, label in zip(generation["path"], generation["label"], strict=True):
        assert (root / path).is_file() and Path(path).parent.name == label


def test_rewrite_replaces_a_previous_dataset(tmp_path):
    out = tmp_path / "data"
    write_dataset("folder", out, _cfg(), progress=False)
    write_dataset("ferplus", out, _cfg(), progress=False)
    assert sorted(p.name for p in out.iterdir()) == [
        "fer2013.csv",
        "fer2013new.csv",
        GENERATION_FILE,
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no temporary leftovers


def test_refuses_to_replace_foreign_data(tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(ValueError, match="refusing"):
        write_dataset("ferplus", out, _cfg(), progress=False)
    assert (out / "thesis.tex").read_text() == "do not delete"


def test_failure_leaves_nothing_half_written(tmp_path, monkeypatch):
    out = tmp_path / "data"
    write_dataset("ferplus", out, _cfg(seed=1), progress=False)
    before = _files(out)

    def broken(root, cfg, records):
        (root / "partial.csv").write_text("half")
        raise RuntimeError("disk full")

    monkeypatch.setitem(writers_module._WRITERS, "ferplus", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_dataset("ferplus", out, _cfg(seed=2), progress=False)
    assert _files(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["data"]


def test_unknown_format_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unknown format"):
        write_dataset("ckplus", tmp_path / "x", _cfg(), progress=False)
    assert not (tmp_path / "x").exists()


def test_cli_writes_dataset_and_preview(tmp_path):
    out = tmp_path / "raw"
    args = ["synth", "--format", "ferplus", "--out", str(out), "--seed", "3", "--no-progress"]
    assert main([*args, "--train", "8", "--valid", "2", "--test", "2"]) == 0
    assert len(pd.read_csv(out / "fer2013new.csv")) == 12
    sheet = tmp_path / "grid.png"
    assert main(["synth", "--preview", str(sheet), "--train", "16"]) == 0
    assert cv2.imread(str(sheet)) is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png", "raw"]  # preview only


def test_cli_reports_bad_output_clearly(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    assert main(["synth", "--out", str(tmp_path), "--train", "2", "--no-progress"]) == 2
    assert "refusing" in capsys.readouterr().err
