from collections import Counter

import pytest

from psr.data.folder import open_folder
from psr.data.labels import EXPRESSIONS
from psr.data.records import load_images


def test_splits_and_classes_in_canonical_order(tmp_path, raw):
    layout = {name: 2 for name in ("happiness", "anger", "neutral")}
    raw.write_folder(tmp_path, {"train": layout, "val": layout, "test": layout})
    ds = open_folder(tmp_path)
    records = list(ds.records)
    assert ds.class_names == tuple(n for n in EXPRESSIONS if n != "contempt")  # no contempt dir
    assert Counter(r.split for r in records) == {"train": 6, "valid": 6, "test": 6}
    assert {ds.class_names[r.label] for r in records} == {"happiness", "anger", "neutral"}
    image = load_images([records[0].image], (32, 32), 3)[0]
    assert image.shape == (32, 32, 3)


def test_valid_is_carved_from_train_when_absent(tmp_path, raw):
    raw.write_folder(tmp_path, {"train": {"fear": 10, "contempt": 5}, "test": {"fear": 1}})
    ds = open_folder(tmp_path, seed=2)
    assert ds.class_names == EXPRESSIONS  # a contempt folder: 8 classes
    records = list(ds.records)
    assert Counter((r.split, ds.class_names[r.label]) for r in records if r.split == "valid") == {
        ("valid", "fear"): 2,
        ("valid", "contempt"): 1,
    }
    assert "seed 2" in ds.protocol["valid"]
    assert [r.split for r in open_folder(tmp_path, seed=2).records] == [r.split for r in records]


def test_seven_classes_leave_contempt_out(tmp_path, raw):
    raw.write_folder(tmp_path, {"train": {"fear": 3, "contempt": 3}})
    records = list(open_folder(tmp_path, num_classes=7, valid_fraction=0.34).records)
    assert len(records) == 3


def test_non_canonical_class_folder_is_an_error(tmp_path, raw):
    raw.write_folder(tmp_path, {"train": {"Happy": 1}})
    with pytest.raises(ValueError, match=r"train: class folders \['Happy'\] are not canonical"):
        open_folder(tmp_path)


def test_unknown_split_folder_and_missing_train(tmp_path, raw):
    raw.write_folder(tmp_path, {"training": {"fear": 1}})
    with pytest.raises(ValueError, match="training: not a split folder"):
        open_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        open_folder(tmp_path / "nothing")
    (tmp_path / "training").rename(tmp_path / "test")
    with pytest.raises(FileNotFoundError, match="has no train/ folder"):
        open_folder(tmp_path)


def test_empty_train_folder(tmp_path):
    (tmp_path / "train" / "fear").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"holds no \.png/\.jpg images"):
        open_folder(tmp_path)
