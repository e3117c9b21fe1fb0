from collections import Counter

import numpy as np
import pytest

from psr.data.labels import DATASET_ORDERS
from psr.data.rafdb import open_rafdb, read_label_file
from psr.data.records import load_images


def test_labels_map_file_values_to_rafdb_order(tmp_path, raw):
    raw.write_rafdb(
        tmp_path, [("train_00001.jpg", 1), ("train_00002.jpg", 7), ("test_0001.jpg", 4)]
    )
    entries = read_label_file(tmp_path / "EmoLabel" / "list_patition_label.txt")
    names = [DATASET_ORDERS["rafdb"][label] for _, _, label, _ in entries]
    assert names == ["surprise", "neutral", "happiness"]
    assert [split for _, split, _, _ in entries] == ["train", "train", "test"]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_lf_and_crlf_label_files_read_the_same(tmp_path, raw, newline):
    raw.write_rafdb(tmp_path, raw.rafdb_entries(2, 1), newline=newline)
    ds = open_rafdb(tmp_path)
    records = list(ds.records)
    assert len(records) == 21
    assert all(r.id.startswith(("train_", "test_")) and "\r" not in r.id for r in records)


def test_aligned_default_and_original_images(tmp_path, raw):
    raw.write_rafdb(tmp_path, raw.rafdb_entries(2, 1))
    aligned = list(open_rafdb(tmp_path).records)
    assert aligned[0].image.path.endswith("Image/aligned/train_00001_aligned.jpg")
    original = open_rafdb(tmp_path, images="original")
    assert original.native_size is None
    first = next(iter(original.records))
    assert first.image.path.endswith("Image/original/train_00001.jpg")
    image = load_images([first.image], (100, 100), 3)[0]
    assert image.shape == (100, 100, 3) and image.dtype == np.uint8


def test_validation_is_a_stratified_fold_of_train_and_test_untouched(tmp_path, raw):
    raw.write_rafdb(tmp_path, raw.rafdb_entries(per_class_train=10, per_class_test=3))
    records = list(open_rafdb(tmp_path, seed=3).records)
    valid = [r for r in records if r.split == "valid"]
    assert Counter(r.label for r in valid) == dict.fromkeys(range(7), 2)  # 1/5 of 10 per class
    assert all(r.id.startswith("train_") for r in valid)
    assert sum(r.split == "test" for r in records) == 21
    again = list(open_rafdb(tmp_path, seed=3).records)
    assert [r.split for r in again] == [r.split for r in records]
    other_fold = list(open_rafdb(tmp_path, seed=3, fold=1).records)
    ids = {r.id for r in valid}
    assert ids.isdisjoint(r.id for r in other_fold if r.split == "valid")


def test_folds_partition_train(tmp_path, raw):
    raw.write_rafdb(tmp_path, raw.rafdb_entries(per_class_train=7, per_class_test=1))
    seen = []
    for fold in range(5):
        seen += [r.id for r in open_rafdb(tmp_path, fold=fold).records if r.split == "valid"]
    assert len(seen) == len(set(seen)) == 49


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("train_00001.jpg 8", "label 8 out of range 1..7"),
        ("train_00001.jpg x", "label 'x' is not an integer"),
        ("val_00001.jpg 1", "'val_00001.jpg' does not start with train_ or test_"),
        ("train_00001.jpg", "expected '<image name> <label>'"),
    ],
)
def test_bad_label_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "EmoLabel" / "list_patition_label.txt"
    path.parent.mkdir(parents=True)
    path.write_text(f"train_00002.jpg 1\n{line}\n")
    with pytest.raises(ValueError, match=rf"list_patition_label\.txt line 2: {message}"):
        read_label_file(path)


def test_empty_and_missing_label_file(tmp_path):
    path = tmp_path / "EmoLabel" / "list_patition_label.txt"
    with pytest.raises(FileNotFoundError, match="label file not found"):
        read_label_file(path)
    path.parent.mkdir(parents=True)
    path.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        read_label_file(path)


def test_eight_classes_is_not_a_rafdb_protocol(tmp_path, raw):
    raw.write_rafdb(tmp_path, raw.rafdb_entries(1, 1))
    with pytest.raises(ValueError, match="no 8-class protocol"):
        open_rafdb(tmp_path, num_classes=8)
