from pathlib import Path

import numpy as np
import pytest

from psr.data.ferplus import (
    VOTE_MODES,
    definition_masks,
    label_votes,
    open_ferplus,
    process_votes,
    read_votes,
    scan_fer2013,
    vote_distribution,
)
from psr.data.labels import EXPRESSIONS
from psr.data.records import BadImage, load_images

REAL_VOTES = Path(__file__).resolve().parents[2].parent / "shared/data/ferplus/fer2013new.csv"
needs_real = pytest.mark.skipif(not REAL_VOTES.is_file(), reason=f"{REAL_VOTES} absent")


# --- Microsoft's vote rules, case by case -------------------------------------------------


def test_outlier_votes_are_removed_before_the_majority():
    dist = vote_distribution([5, 1, 1, 1, 1, 1, 0, 0, 0, 0], "majority")
    assert dist[0] == 1.0  # 5 of 5 after the single votes are dropped, not 5 of 10


def test_majority_needs_more_than_half():
    assert vote_distribution([5, 5, 0, 0, 0, 0, 0, 0, 0, 0], "majority")[8] == 1.0
    assert vote_distribution([6, 4, 0, 0, 0, 0, 0, 0, 0, 0], "majority")[0] == 1.0


def test_crossentropy_takes_tied_top_emotions_together():
    dist = np.array(vote_distribution([0, 0, 4, 0, 0, 0, 4, 0, 2, 0], "crossentropy"))
    np.testing.assert_allclose(dist[[2, 6]], [0.5, 0.5])


def test_crossentropy_discards_when_more_than_three_emotions_are_needed():
    dist = vote_distribution([2, 2, 2, 2, 2, 0, 0, 0, 0, 0], "crossentropy")
    assert dist[8] == 1.0


def test_crossentropy_unknown_tie_after_an_emotion_is_dropped():
    # neutral first (4), then unknown ties surprise at 3: unknown is removed, surprise kept.
    dist = vote_distribution([4, 0, 3, 0, 0, 0, 0, 0, 3, 0], "crossentropy")
    np.testing.assert_allclose(dist[:3], [4 / 7, 0, 3 / 7])
    assert dist[8] == 0


def test_multi_target_keeps_emotions_with_30_percent():
    dist = vote_distribution([4, 3, 2, 0, 0, 0, 0, 0, 1, 0], "multi_target")
    np.testing.assert_allclose(dist[:3], [4 / 7, 3 / 7, 0])


def test_process_votes_keeps_only_emotion_argmax_and_renormalises_over_8():
    votes = np.array([[0, 0, 0, 0, 0, 0, 0, 3, 7, 0], [3, 0, 0, 0, 0, 0, 0, 0, 0, 7]])
    keep, targets = process_votes(votes, "multi_target")
    assert not keep.any()
    keep, targets = process_votes(np.array([[4, 0, 0, 0, 0, 0, 0, 0, 4, 2]]), "multi_target")
    assert keep[0]  # argmax ties go to the first index (neutral), as np.argmax in ferplus.py
    np.testing.assert_allclose(targets[0], np.eye(8)[0])


def test_unknown_vote_mode_is_an_error():
    with pytest.raises(ValueError, match="vote mode"):
        vote_distribution([0.0] * 10, "soft")


# --- the golden counts on the real vote file ----------------------------------------------


@pytest.fixture(scope="module")
def real_table():
    return read_votes(REAL_VOTES)


@needs_real
def test_real_vote_file_shape_and_not_a_face_rows(real_table):
    table = real_table
    assert len(table) == 35_887
    not_face = table.names == ""
    counts = {u: int((not_face & (table.usage == u)).sum()) for u in np.unique(table.usage)}
    assert counts == {"Training": 148, "PublicTest": 10, "PrivateTest": 15}


@needs_real
@pytest.mark.parametrize(
    ("mode", "train"),
    [
        ("majority", 25_060),
        ("probability", 27_956),
        ("crossentropy", 27_956),
        ("multi_target", 27_671),
        ("official", 25_060),  # Microsoft's majority images, raw proportions as targets
    ],
)
def test_real_golden_split_counts(mode, train, real_table):
    chosen = label_votes(real_table, mode)
    counts = {s: int((chosen.splits == s).sum()) for s in ("train", "valid", "test")}
    # valid: majority; test: the argmax definition, which holds Microsoft's 3,153
    assert counts == {"train": train, "valid": 3_199, "test": 3_573}
    test = chosen.splits == "test"
    definitions = definition_masks(real_table.votes[chosen.rows[test]])
    assert {k: int(v.sum()) for k, v in definitions.items()} == {"majority": 3_153, "argmax": 3_573}


@needs_real
def test_real_official_targets_are_the_raw_emotion_proportions(real_table):
    chosen = label_votes(real_table, "official")
    votes = real_table.votes[chosen.rows][:, :8]
    np.testing.assert_allclose(chosen.targets, votes / votes.sum(axis=1, keepdims=True))
    first = np.flatnonzero(real_table.names[chosen.rows] == "fer0000001.png")[0]
    np.testing.assert_allclose(chosen.targets[first], np.array([6, 0, 1, 1, 0, 0, 0, 0]) / 8)
    majority = label_votes(real_table, "majority")
    train = chosen.splits == "train"
    np.testing.assert_array_equal(chosen.rows[train], majority.rows[majority.splits == "train"])
    np.testing.assert_array_equal(chosen.labels, majority.labels)  # same images, same labels


@needs_real
def test_real_golden_majority_per_class(real_table):
    chosen = label_votes(real_table, "majority")
    as_dict = lambda c: dict(zip(EXPRESSIONS, c.tolist(), strict=True))  # noqa: E731
    assert as_dict(chosen.counts("train")) == {
        "neutral": 8740, "happiness": 7287, "surprise": 3149, "sadness": 3014,
        "anger": 2100, "fear": 532, "disgust": 119, "contempt": 119,
    }  # fmt: skip
    test = chosen.splits == "test"
    majority = definition_masks(real_table.votes[chosen.rows[test]])["majority"]
    majority_counts = np.bincount(chosen.labels[test][majority], minlength=8)
    assert as_dict(majority_counts) == {
        "neutral": 1090, "happiness": 893, "surprise": 396, "sadness": 384,
        "anger": 273, "fear": 83, "disgust": 18, "contempt": 16,
    }  # fmt: skip
    assert as_dict(chosen.counts("test")) == {  # the argmax definition
        "neutral": 1278, "happiness": 929, "surprise": 446, "sadness": 448,
        "anger": 326, "fear": 94, "disgust": 23, "contempt": 29,
    }  # fmt: skip


@needs_real
def test_real_seven_class_protocol_drops_contempt_and_renormalises(real_table):
    chosen = label_votes(real_table, "crossentropy", num_classes=7)
    assert "contempt" not in chosen.class_names and chosen.targets.shape[1] == 7
    np.testing.assert_allclose(chosen.targets.sum(axis=1), 1.0)
    majority7 = label_votes(real_table, "majority", num_classes=7)
    test = majority7.splits == "test"
    majority = definition_masks(real_table.votes[majority7.rows[test]])["majority"]
    counts = np.bincount(majority7.labels[test][majority], minlength=7)
    np.testing.assert_array_equal(counts, [1090, 893, 396, 384, 273, 18, 83])


# --- the joined reader on files in the exact formats -------------------------------------


def _read_all(source, **kwargs):
    ds = open_ferplus(source, **kwargs)
    return ds, list(ds.records)


def test_reader_joins_pixels_and_votes_skipping_not_a_face(tmp_path, raw):
    usages, votes, names = raw.small_fer_votes()
    _, _, images = raw.write_fer_pair(tmp_path, usages, votes, names)
    ds, records = _read_all(tmp_path, vote_mode="majority")
    assert ds.class_names == EXPRESSIONS and ds.channels == 1
    by_split = {s: [r.id for r in records if r.split == s] for s in ("train", "valid", "test")}
    assert by_split == {
        "train": ["row00000", "row00001", "row00004", "row00005"],
        "valid": ["row00006", "row00007"],
        "test": ["row00009", "row00010", "row00011"],
    }
    labels = [EXPRESSIONS[r.label] for r in records]
    assert labels == [
        "neutral", "happiness", "sadness", "contempt", "neutral", "anger", "surprise", "fear",
        "disgust",
    ]  # fmt: skip
    assert records[0].votes == tuple(float(v) for v in votes[0])
    loaded = load_images([r.image for r in records], (48, 48), 1)
    rows = [int(r.id[3:]) for r in records]
    np.testing.assert_array_equal(np.stack(loaded)[..., 0], images[rows])


def test_crossentropy_mode_keeps_soft_rows_in_train_only(tmp_path, raw):
    usages, votes, names = raw.small_fer_votes()
    raw.write_fer_pair(tmp_path, usages, votes, names)
    _, records = _read_all(tmp_path, vote_mode="crossentropy")
    soft = next(r for r in records if r.id == "row00002")
    np.testing.assert_allclose(soft.target, [0, 0, 0.5, 0, 0, 0, 0.5, 0])
    assert sum(r.split == "train" for r in records) == 5
    assert sum(r.split == "valid" for r in records) == 2  # majority: row 8 stays out


def test_icml_variant_and_crlf_read_the_same(tmp_path, raw):
    usages, votes, names = raw.small_fer_votes()
    raw.write_fer_pair(tmp_path / "a", usages, votes, names)
    raw.write_fer_pair(tmp_path / "b", usages, votes, names, icml=True, newline="\r\n")
    _, a = _read_all(tmp_path / "a")
    _, b = _read_all(tmp_path / "b")
    assert [(r.id, r.label, r.target) for r in a] == [(r.id, r.label, r.target) for r in b]
    pa = np.stack(load_images([r.image for r in a], (48, 48), 1))
    pb = np.stack(load_images([r.image for r in b], (48, 48), 1))
    np.testing.assert_array_equal(pa, pb)


def test_seven_classes_drop_contempt(tmp_path, raw):
    usages, votes, names = raw.small_fer_votes()
    raw.write_fer_pair(tmp_path, usages, votes, names)
    ds, records = _read_all(tmp_path, num_classes=7)
    assert "contempt" not in ds.class_names
    assert "row00005" not in [r.id for r in records]


# --- bad input --------------------------------------------------------------------------


def test_wrong_vote_header_names_the_file(tmp_path, raw):
    usages, votes, names = raw.small_fer_votes()
    _, vote_file, _ = raw.write_fer_pair(tmp_path, usages, votes, names)
    vote_file.write_text(vote_file.read_text().replace("neutral", "Neutral", 1))
    with pytest.raises(ValueError, match=r"fer2013new\.csv line 1: wrong header"):
        read_votes(vote_file)


def test_empty_vote_file(tmp_path):
    (tmp_path / "fer2013new.csv").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        read_votes(tmp_path / "fer2013new.csv")


def test_bad_vote_row_names_the_line(tmp_path, raw):
    usages, votes, names = raw.small_fer_votes()
    _, vote_file, _ = raw.write_fer_pair(tmp_path, usages, votes, names)
    lines = vote_file.read_text().splitlines()
    lines[4] = lines[4].replace("Training", "Train")
    vote_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 5: Usage 'Train'"):
        read_votes(vote_file)


def test_missing_pixel_column(tmp_path, raw):
    usages, votes, names = raw.small_fer_votes()
    pixels, _, _ = raw.write_fer_pair(tmp_path, usages, votes, names)
    pixels.write_text(pixels.read_text().replace("emotion,pixels,Usage", "emotion,pix,Usage", 1))
    with pytest.raises(ValueError, match=r"missing column\(s\) \['pixels'\]"):
        list(scan_fer2013(pixels))


def test_empty_pixel_file(tmp_path):
    (tmp_path / "fer2013.csv").write_text("")
    with pytest.raises(ValueError, match="is empty"):
        list(scan_fer2013(tmp_path / "fer2013.csv"))


def test_emotion_out_of_range_names_the_line(tmp_path, raw):
    usages, votes, names = raw.small_fer_votes()
    pixels, _, _ = raw.write_fer_pair(tmp_path, usages, votes, names)
    lines = pixels.read_text().splitlines()
    lines[3] = "9" + lines[3][1:]
    pixels.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"fer2013\.csv line 4: emotion 9 out of range"):
        list(scan_fer2013(pixels))


def test_mismatched_row_counts(tmp_path, raw):
    usages, votes, names = raw.small_fer_votes()
    pixels, _, _ = raw.write_fer_pair(tmp_path, usages, votes, names)
    pixels.write_text("\n".join(pixels.read_text().splitlines()[:-2]) + "\n")
    with pytest.raises(ValueError, match=r"has 10 rows but .* has 12"):
        _read_all(tmp_path)


def test_rows_out_of_order_are_detected(tmp_path, raw):
    usages, votes, names = raw.small_fer_votes()
    raw.write_fer_pair(tmp_path, usages[::-1], votes, names)
    (tmp_path / "fer2013new.csv").unlink()
    raw.write_fer_pair(tmp_path / "v", usages, votes, names)
    with pytest.raises(ValueError, match="not in the same row order"):
        _read_all(tmp_path, votes=tmp_path / "v" / "fer2013new.csv")


def test_wrong_length_pixel_string_is_a_bad_image_naming_file_and_line(tmp_path, raw):
    usages, votes, names = raw.small_fer_votes()
    pixels, _, _ = raw.write_fer_pair(tmp_path, usages, votes, names)
    lines = pixels.read_text().splitlines()
    lines[1] = lines[1].replace(" 0 ", " ", 1).rsplit(" ", 2)[0] + ",Training"
    pixels.write_text("\n".join(lines) + "\n")
    _, records = _read_all(tmp_path)
    [bad, *_] = load_images([r.image for r in records], (48, 48), 1)
    assert isinstance(bad, BadImage)
    assert "fer2013.csv line 2" in str(bad) and "expected 2304" in str(bad)


def test_missing_files_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"fer2013\.csv nor icml_face_data\.csv"):
        open_ferplus(tmp_path)


@pytest.mark.parametrize("mode", VOTE_MODES)
def test_every_mode_gives_distributions(mode, tmp_path, raw):
    usages, votes, names = raw.small_fer_votes()
    raw.write_fer_pair(tmp_path, usages, votes, names)
    _, records = _read_all(tmp_path, vote_mode=mode)
    for r in records:
        assert abs(sum(r.target) - 1) < 1e-9 and r.label == int(np.argmax(r.target))


def test_vote_rows_moved_inside_a_usage_block_are_caught_by_their_image_names(tmp_path, raw):
    """Same Usage pattern, so only the names show that rows 0 and 1 (both Training) swapped."""
    usages, votes, names = raw.small_fer_votes()
    order = [1, 0, *range(2, 12)]
    _, vote_file, _ = raw.write_fer_pair(
        tmp_path, usages, [votes[i] for i in order], [names[i] for i in order]
    )
    with pytest.raises(ValueError, match=r"line 2: Image name 'fer0000001.png' where row 0 .*"):
        read_votes(vote_file)


def test_a_vote_file_of_random_bytes_is_named(tmp_path):
    path = tmp_path / "fer2013new.csv"
    path.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)))
    with pytest.raises(ValueError, match=f"{path}: not a UTF-8 text CSV"):
        read_votes(path)


@needs_real
def test_the_real_files_names_are_the_shipped_ones_and_a_moved_row_is_caught(tmp_path):
    from psr.data import ferplus_names

    names = ferplus_names._column(REAL_VOTES)
    assert ferplus_names.microsoft_names() == tuple(names)
    lines = REAL_VOTES.read_text().splitlines()
    moved = lines[:101] + lines[102:2001] + [lines[101]] + lines[2001:]  # row 100 -> row 1999
    path = tmp_path / "fer2013new.csv"
    path.write_text("\n".join(moved) + "\n")
    with pytest.raises(
        ValueError,
        match=r"line 102: Image name 'fer0000100\.png' where row 100 .* needs 'fer0000099\.png'",
    ):
        read_votes(path)
