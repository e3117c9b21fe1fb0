import json

import numpy as np
import pytest

from psr.data.prepared import (
    create_images,
    drop_rows,
    load_split,
    read_manifest,
    write_index,
    write_manifest,
)

NAMES = ("neutral", "happiness", "surprise")


def _write(root, images, labels, votes=None, targets=None):
    """A one-split prepared dataset written with the format's own writers."""
    root.mkdir(parents=True, exist_ok=True)
    offset = create_images(root / "train.npy", len(images), images.shape[1:3], images.shape[3])
    with open(root / "train.npy", "r+b") as f:
        f.seek(offset)
        f.write(images.tobytes())
    ids = [f"img{i}" for i in range(len(images))]
    write_index(
        root / "train.csv",
        ids,
        [f"src/{i}.png" for i in range(len(images))],
        labels,
        NAMES,
        votes=votes,
        vote_names=NAMES if votes is not None else None,
        targets=targets,
    )
    write_manifest(
        root,
        {
            "dataset": "folder",
            "protocol": {},
            "class_names": list(NAMES),
            "image_size": list(images.shape[1:3]),
            "channels": images.shape[3],
            "splits": {"train": {"count": len(images), "per_class": {}}},
            "source": {},
        },
    )


def test_round_trip_images_labels_votes_targets(tmp_path, raw):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
    labels = [0, 2, 1, 1, 0]
    votes = rng.integers(0, 10, (5, 3)).astype(np.float64)
    targets = rng.random((5, 3))
    targets /= targets.sum(axis=1, keepdims=True)
    _write(tmp_path, images, labels, votes, targets)
    split = load_split(tmp_path, "train")
    assert isinstance(split.images, np.memmap) and not split.images.flags.writeable
    np.testing.assert_array_equal(split.images, images)
    assert split.labels.dtype == np.int64 and split.labels.tolist() == labels
    assert split.votes.dtype == np.float32 and split.soft_targets.dtype == np.float32
    np.testing.assert_array_equal(split.votes, votes.astype(np.float32))
    np.testing.assert_allclose(split.soft_targets, targets, rtol=1e-6)
    assert split.ids.tolist() == [f"img{i}" for i in range(5)]
    assert split.class_names == NAMES and len(split) == 5
    raw.verify_checksums(tmp_path)


def test_no_votes_gives_none(tmp_path):
    _write(tmp_path, np.zeros((2, 4, 4, 1), np.uint8), [0, 1])
    split = load_split(tmp_path, "train")
    assert split.votes is None and split.soft_targets is None
    assert split.images.shape == (2, 4, 4, 1)


def test_ids_that_look_like_numbers_stay_strings(tmp_path):
    root = tmp_path / "d"
    _write(root, np.zeros((2, 4, 4, 1), np.uint8), [0, 1])
    text = (root / "train.csv").read_text().replace("img0", "007").replace("img1", "NA")
    (root / "train.csv").write_text(text)
    assert load_split(root, "train").ids.tolist() == ["007", "NA"]


def test_checksum_mismatch_is_reported(tmp_path, raw):
    _write(tmp_path, np.zeros((2, 4, 4, 1), np.uint8), [0, 1])
    (tmp_path / "train.csv").write_text((tmp_path / "train.csv").read_text() + "\n")
    with pytest.raises(ValueError, match=r"sha256 differs\): \['train.csv'\]"):
        raw.verify_checksums(tmp_path)


def test_inconsistent_files_are_errors(tmp_path):
    _write(tmp_path, np.zeros((3, 4, 4, 1), np.uint8), [0, 1, 2])
    with pytest.raises(ValueError, match="no split 'test'"):
        load_split(tmp_path, "test")
    np.save(tmp_path / "train.npy", np.zeros((2, 4, 4, 1), np.uint8))
    with pytest.raises(ValueError, match=r"train\.npy: uint8 \[2, 4, 4, 1\], expected uint8 \[3"):
        load_split(tmp_path, "train")
    (tmp_path / "train.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing .*train\.npy"):
        load_split(tmp_path, "train")


def test_partial_vote_columns_and_bad_labels(tmp_path):
    _write(tmp_path, np.zeros((2, 4, 4, 1), np.uint8), [0, 1], votes=np.ones((2, 3)))
    text = (tmp_path / "train.csv").read_text().replace("votes_surprise", "votes_other")
    (tmp_path / "train.csv").write_text(text)
    with pytest.raises(ValueError, match="votes_surprise"):
        load_split(tmp_path, "train")
    _write(tmp_path, np.zeros((2, 4, 4, 1), np.uint8), [0, 3])
    with pytest.raises(ValueError, match=r"labels outside 0\.\.2"):
        load_split(tmp_path, "train")


def test_manifest_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a prepared dataset"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"dataset": "x"}))
    with pytest.raises(ValueError, match="missing key"):
        read_manifest(tmp_path)


def test_drop_rows_keeps_order(tmp_path):
    data = np.arange(5 * 2 * 2 * 1, dtype=np.uint8).reshape(5, 2, 2, 1)
    np.save(tmp_path / "x.npy", data)
    drop_rows(tmp_path / "x.npy", [1, 3], chunk=2)
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), data[[0, 2, 4]])


def test_prepare_refuses_to_replace_a_folder_that_is_not_a_prepared_dataset(tmp_path):
    from psr.data.prepare import PrepareConfig, prepare

    raw = tmp_path / "folder"
    (raw / "train" / "happiness").mkdir(parents=True)
    cv2 = pytest.importorskip("cv2")
    for i in range(10):
        cv2.imwrite(str(raw / "train" / "happiness" / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
    cfg = PrepareConfig(dataset="folder", source=raw, workers=0, progress=False)
    # <out>/<name> is the raw data itself: writing there would wipe it
    with pytest.raises(ValueError, match="refusing to replace it"):
        prepare(cfg, tmp_path)
    assert len(list((raw / "train" / "happiness").iterdir())) == 10
