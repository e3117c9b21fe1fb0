from collections import Counter

import numpy as np
import pytest

from psr.data.affectnet import open_affectnet, open_affectnet_compact, read_file_list
from psr.data.records import BadImage, Record, Skipped, load_images


def _rows(codes, prefix="a"):
    return [(f"{i % 3}/{prefix}{i}.jpg", (8, 10, 40, 50), code) for i, code in enumerate(codes)]


def test_header_and_header_less_lists_read_the_same(tmp_path, raw):
    rows = _rows([0, 1, 2])
    raw.write_affectnet(tmp_path / "a", rows, rows, validation_header=True)
    raw.write_affectnet(tmp_path / "b", rows, rows, validation_header=False)
    lists = "Manually_Annotated_file_lists"
    with_header = list(read_file_list(tmp_path / "a" / lists / "validation.csv"))
    without = list(read_file_list(tmp_path / "b" / lists / "validation.csv"))
    assert [r[1:] for r in with_header] == [r[1:] for r in without]
    assert with_header[0][0] == 2 and without[0][0] == 1  # line numbers stay true to the file
    assert without[0][1:] == ("0/a0.jpg", (8, 10, 40, 50), 0)


def test_codes_beyond_the_protocol_are_dropped(tmp_path, raw):
    codes = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10] * 5
    raw.write_affectnet(tmp_path, _rows(codes), _rows([0, 7, 8, 10], "v"))
    eight = [r for r in open_affectnet(tmp_path).records if isinstance(r, Record)]
    seven = [r for r in open_affectnet(tmp_path, num_classes=7).records if isinstance(r, Record)]
    assert {r.label for r in eight} == set(range(8))
    assert {r.label for r in seven} == set(range(7))
    assert Counter(r.split for r in seven if r.split == "test") == {"test": 1}


def test_valid_comes_from_train_and_official_validation_is_test(tmp_path, raw):
    raw.write_affectnet(tmp_path, _rows(list(range(8)) * 5), _rows(list(range(8)), "v"))
    records = list(open_affectnet(tmp_path, seed=1).records)
    assert Counter(r.split for r in records) == {"train": 32, "valid": 8, "test": 8}
    assert all(r.id.startswith(("0/a", "1/a", "2/a")) for r in records if r.split == "valid")
    assert Counter(r.label for r in records if r.split == "valid") == dict.fromkeys(range(8), 1)


def test_balanced_validation_draws_the_same_count_of_every_class(tmp_path, raw):
    codes = [0] * 20 + [1] * 9 + list(range(2, 8)) * 4  # imbalanced, as AffectNet
    raw.write_affectnet(tmp_path, _rows(codes), _rows(list(range(8)), "v"))
    source = open_affectnet(tmp_path, seed=1, valid_per_class=3)
    records = list(source.records)
    assert Counter(r.label for r in records if r.split == "valid") == dict.fromkeys(range(8), 3)
    assert Counter(r.split for r in records) == {"train": len(codes) - 24, "valid": 24, "test": 8}
    assert source.protocol["valid"] == "class-balanced 3 per class from train, seed 1"


def test_faces_are_cropped_with_margin(tmp_path, raw):
    raw.write_affectnet(tmp_path, _rows([1]), _rows([1], "v"))
    plain = next(iter(open_affectnet(tmp_path).records))
    wide = next(iter(open_affectnet(tmp_path, face_margin=0.1).records))
    crop = load_images([plain.image], (50, 40), 3)[0]
    full = load_images([plain.image.__class__(plain.image.path)], (80, 64), 3)[0]
    np.testing.assert_array_equal(crop, full[10:60, 8:48])
    assert wide.image.margin == 0.1
    wider = load_images([wide.image], (60, 48), 3)[0]
    np.testing.assert_array_equal(wider, full[5:65, 4:52])


def test_negative_box_is_skipped_with_file_and_line(tmp_path, raw):
    rows = [*_rows([0, 1]), ("0/neg.jpg", (5, 5, -3, 20), 2)]
    raw.write_affectnet(tmp_path, rows, _rows([0], "v"))
    items = list(open_affectnet(tmp_path).records)
    [skipped] = [r for r in items if isinstance(r, Skipped)]
    assert "training.csv line 4" in skipped.reason and "non-positive size" in skipped.reason
    assert skipped.source.endswith("0/neg.jpg")


def test_every_box_negative_names_the_boxes_not_just_no_images(tmp_path, raw):
    from psr.data.prepare import PrepareConfig, prepare

    rows = [(f"0/n{i}.jpg", (5, 5, -3, 20), i % 3) for i in range(12)]
    raw.write_affectnet(tmp_path / "a", rows, _rows([0], "v"))
    cfg = PrepareConfig(dataset="affectnet", source=tmp_path / "a", workers=0, progress=False)
    with pytest.raises(ValueError) as err:
        prepare(cfg, tmp_path / "p")
    message = str(err.value)
    assert "no usable AffectNet training images with codes 0..7: all 12 were rejected" in message
    assert "training.csv line 2" in message and "(5, 5, -3, 20) has a non-positive size" in message
    assert "... and 2 more" in message


def test_box_outside_the_image_is_a_bad_image_with_file_and_line(tmp_path, raw):
    rows = [*_rows([0]), ("0/out.jpg", (500, 10, 20, 20), 2)]
    raw.write_affectnet(tmp_path, rows, _rows([0], "v"))
    records = [r for r in open_affectnet(tmp_path).records if r.id == "0/out.jpg"]
    [bad] = load_images([records[0].image], (20, 20), 3)
    assert isinstance(bad, BadImage)
    assert "training.csv line 3" in str(bad) and "outside the 64x80 image" in str(bad)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0/x.jpg,1,2,3,4,lm,12,0,0", "expression 12 out of range 0..10"),
        ("0/x.jpg,1,2,3,4,lm,happy,0,0", "face box .* or expression 'happy' is not a number"),
        ("0/x.jpg,1,2,3,4,lm,1", "7 fields, expected 9"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, raw, line, message):
    raw.write_affectnet(tmp_path, _rows([0]), _rows([0], "v"))
    path = tmp_path / "Manually_Annotated_file_lists" / "training.csv"
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(ValueError, match=rf"training\.csv line 3: {message}"):
        list(read_file_list(path))


def test_wrong_header_and_empty_list(tmp_path):
    path = tmp_path / "training.csv"
    path.write_text("subDirectory_filePath,face_x,face_y,face_width,face_height,expression\n")
    with pytest.raises(ValueError, match=r"line 1: wrong header .*facial_landmarks"):
        list(read_file_list(path))
    path.write_text("name,a,b\n")
    with pytest.raises(ValueError, match="neither the header"):
        list(read_file_list(path))
    path.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        list(read_file_list(path))


def test_compact_release(tmp_path, raw):
    raw.write_affectnet_compact(
        tmp_path, {"train_set": [0, 1, 2, 3, 4, 5, 6, 7] * 5, "val_set": [7, 6, 5, 1]}
    )
    ds = open_affectnet_compact(tmp_path, num_classes=7)
    records = list(ds.records)
    assert Counter(r.split for r in records) == {"train": 28, "valid": 7, "test": 3}
    image = load_images([records[0].image], (100, 100), 3)[0]
    assert image.shape == (100, 100, 3)
    np.save(tmp_path / "val_set" / "annotations" / "0_exp.npy", np.array("x"))
    with pytest.raises(ValueError, match=r"0_exp\.npy: not an expression annotation"):
        open_affectnet_compact(tmp_path)


def test_compact_missing_annotation_is_skipped(tmp_path, raw):
    raw.write_affectnet_compact(tmp_path, {"train_set": [0, 1] * 5, "val_set": [1]})
    (tmp_path / "train_set" / "annotations" / "3_exp.npy").unlink()
    skipped = [r for r in open_affectnet_compact(tmp_path).records if isinstance(r, Skipped)]
    assert len(skipped) == 1 and "3_exp.npy: annotation file is missing" in skipped[0].reason


def test_header_with_the_columns_in_another_order_is_rejected(tmp_path):
    """Rows are read by position: a header naming the same columns in another order (here
    expression and valence swapped) would silently read valence as the label."""
    path = tmp_path / "training.csv"
    header = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
    path.write_text(header + "valence,expression,arousal\n1/a.jpg,0,0,10,10,1;2,0.5,3,0.1\n")
    with pytest.raises(ValueError, match=r"line 1: wrong header"):
        list(read_file_list(path))
