"""The synthetic face generator: determinism, class balance, crowd votes, visible expressions."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from psr.data.labels import EXPRESSIONS
from psr.data.synthetic import (
    VOTE_COLUMNS,
    CropView,
    NuisanceConfig,
    PhotoView,
    SynthConfig,
    generate_samples,
    render_sample,
    write_preview,
)
from psr.data.synthetic.crowd import clarity, crowd_votes
from psr.data.synthetic.generator import split_expressions


def _cfg(**kw) -> SynthConfig:
    return SynthConfig(**{"train": 40, "valid": 8, "test": 8, **kw})


def test_same_seed_same_pixels_other_seed_other_pixels():
    a = [s.image for s in generate_samples(_cfg(seed=3), "train")]
    b = [s.image for s in generate_samples(_cfg(seed=3), "train")]
    c = [s.image for s in generate_samples(_cfg(seed=4), "train")]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert sum(np.array_equal(x, y) for x, y in zip(a, c, strict=True)) == 0


def test_pictures_do_not_depend_on_chunking():
    cfg = _cfg(seed=1)
    whole = list(generate_samples(cfg, "valid"))
    chunk = list(generate_samples(cfg, "valid", start=5, stop=8))
    for got, want in zip(chunk, whole[5:8], strict=True):
        assert np.array_equal(got.image, want.image)
        assert np.array_equal(got.votes, want.votes)
        assert got.params == want.params


def test_splits_differ():
    cfg = _cfg()
    train = next(iter(generate_samples(cfg, "train")))
    test = next(iter(generate_samples(cfg, "test")))
    assert not np.array_equal(train.image, test.image)


def test_crop_view_shape_and_dtype():
    s = render_sample(_cfg(), "train", 0, "happiness", CropView(48, gray=True))
    assert s.image.shape == (48, 48) and s.image.dtype == np.uint8
    s = render_sample(_cfg(), "train", 0, "happiness", CropView(64, gray=False))
    assert s.image.shape == (64, 64, 3)


def test_photo_view_keeps_face_box_and_landmarks_inside():
    for index in range(10):
        s = render_sample(_cfg(), "train", index, "fear", PhotoView(160))
        h, w = s.image.shape[:2]
        assert min(h, w) >= 160
        assert s.landmarks.shape == (68, 2)
        x, y, bw, bh = s.face_box
        assert bw > 0 and bh > 0
        # The face was placed inside the photo; rotation may push box corners slightly out.
        cx, cy = x + bw / 2, y + bh / 2
        assert 0 < cx < w and 0 < cy < h
        assert np.all(s.landmarks >= [x - 1, y - 1]) and np.all(
            s.landmarks <= [x + bw + 1, y + bh + 1]
        )


def test_intensity_zero_is_a_neutral_face():
    # Same picture index -> same identity, pose and nuisance; only the expression differs.
    cfg = _cfg(intensity=(0.0, 0.0), nuisance=NuisanceConfig(noise_rate=0, jpeg_rate=0))
    neutral = render_sample(cfg, "train", 7, "neutral", allow_not_a_face=False).image
    for expression in EXPRESSIONS[1:]:
        face = render_sample(cfg, "train", 7, expression, allow_not_a_face=False).image
        # Only the small per-face idiosyncrasy differs (its draws come from the same stream).
        assert np.abs(face.astype(int) - neutral).mean() < 6, expression


def test_uniform_balance_is_exact():
    labels = split_expressions(0, "train", 803, "uniform")
    counts = [labels.count(e) for e in EXPRESSIONS]
    assert sum(counts) == 803 and max(counts) - min(counts) <= 1


def test_ferplus_balance_follows_real_frequencies():
    labels = split_expressions(0, "train", 10_000, "ferplus")
    counts = {e: labels.count(e) for e in EXPRESSIONS}
    assert counts["neutral"] > counts["happiness"] > counts["surprise"] > counts["anger"]
    assert counts["contempt"] < 100 and counts["disgust"] < 100
    assert abs(counts["neutral"] - round(10_000 * 8740 / 25060)) <= 1


def test_class_subset_excludes_contempt():
    classes = tuple(e for e in EXPRESSIONS if e != "contempt")
    labels = split_expressions(0, "test", 70, "uniform", classes)
    assert "contempt" not in labels and len(set(labels)) == 7


def test_crowd_votes_are_ten_and_track_clarity():
    rng = np.random.default_rng(0)
    for expression in EXPRESSIONS:
        votes = crowd_votes(rng, expression, 0.5)
        assert votes.shape == (len(VOTE_COLUMNS),) and votes.sum() == 10 and votes.min() >= 0
    nf = crowd_votes(rng, None, 0.0)
    assert nf.sum() == 10
    assert clarity("fear", 1.0, 160) > clarity("fear", 1.0, 16) > clarity("fear", 0.1, 16)


def test_majority_agrees_with_truth_far_more_than_chance_and_less_when_weak():
    rng = np.random.default_rng(1)

    def agreement(expression_clarity: float) -> float:
        hits = 0
        for k in range(400):
            expression = EXPRESSIONS[k % 8]
            c = clarity(expression, expression_clarity, 80.0)
            hits += int(np.argmax(crowd_votes(rng, expression, c))) == EXPRESSIONS.index(expression)
        return hits / 400

    strong, weak = agreement(0.9), agreement(0.1)
    assert strong > 0.85
    assert weak < strong - 0.3
    assert weak > 1 / 8  # neutral faces stay neutral, so still above chance


def test_confusions_follow_ferplus_patterns():
    rng = np.random.default_rng(2)
    fear = sum(crowd_votes(rng, "fear", 0.95) for _ in range(300))
    sadness = sum(crowd_votes(rng, "sadness", 0.3) for _ in range(300))
    col = VOTE_COLUMNS.index
    # Clear fear's commonest mistake is surprise; weak sadness drifts to neutral.
    wrong_fear = np.delete(fear, col("fear"))
    assert np.delete(np.array(VOTE_COLUMNS), col("fear"))[np.argmax(wrong_fear)] == "surprise"
    assert sadness[col("neutral")] > sadness[col("anger")] + sadness[col("happiness")]


def test_generation_params_are_recorded():
    s = render_sample(_cfg(), "train", 2, "anger")
    for key in ("true_label", "intensity", "face_size", "rotation_deg", "occlusion", "majority"):
        assert key in s.params
    assert s.params["true_label"] == "anger"
    assert 16 <= s.params["face_size"] <= 160


def test_not_a_face_pictures_are_voted_nf():
    cfg = _cfg(not_a_face_rate=0.5, train=40)
    samples = list(generate_samples(cfg, "train"))
    nf = [s for s in samples if s.expression is None]
    assert 8 <= len(nf) <= 32
    assert all(s.label == -1 and s.params["true_label"] == "not_a_face" for s in nf)
    assert np.mean([VOTE_COLUMNS[s.majority] == "NF" for s in nf]) > 0.8


def test_config_rejects_unknown_keys_and_bad_ranges():
    with pytest.raises(ValidationError):
        SynthConfig(trian=10)
    with pytest.raises(ValidationError):
        SynthConfig(face_size=(50, 20))
    with pytest.raises(ValidationError):
        SynthConfig(intensity=(0.5, 1.5))
    with pytest.raises(ValidationError):
        NuisanceConfig(jpeg_quality=(90, 10))
    with pytest.raises(ValueError, match="unknown split"):
        _cfg().count("validation")
    with pytest.raises(ValueError, match="unknown expression"):
        render_sample(_cfg(), "train", 0, "joy")


def test_full_size_counts():
    cfg = SynthConfig.full_size(seed=5)
    assert (cfg.train, cfg.valid, cfg.test) == (28_709, 3_589, 3_589)
    assert cfg.class_balance == "ferplus" and cfg.seed == 5


def _features(samples) -> np.ndarray:
    """24x24 pixels, standardised per picture (skin tone and exposure are not expressions)."""
    rows = []
    for s in samples:
        small = cv2.resize(s.image.astype(np.float32), (24, 24), interpolation=cv2.INTER_AREA)
        rows.append((small.ravel() - small.mean()) / (small.std() + 1e-3))
    return np.stack(rows)


@pytest.mark.slow
def test_expressions_are_visibly_distinct():
    """A linear model on 24x24 pixels tells strong expressions apart far above chance (1/8)."""
    from sklearn.linear_model import LogisticRegression

    calm = NuisanceConfig(
        rotation_deg=0,
        translation=0,
        crop_margin=(1.2, 1.2),
        clutter=0,
        lighting=0,
        occlusion_rate=0,
        glasses_rate=0,
        blur_rate=0,
        noise_rate=0,
        jpeg_rate=0,
    )
    cfg = SynthConfig(
        train=480,
        valid=0,
        test=240,
        intensity=(0.8, 1.0),
        face_size=(48, 96),
        nuisance=calm,
        not_a_face_rate=0,
    )
    train, test = list(generate_samples(cfg, "train")), list(generate_samples(cfg, "test"))
    clf = LogisticRegression(max_iter=500, C=0.1)
    clf.fit(_features(train), [s.label for s in train])
    accuracy = clf.score(_features(test), [s.label for s in test])
    assert accuracy > 0.6, accuracy


def test_preview_has_one_labelled_row_per_expression(tmp_path):
    path = write_preview(tmp_path / "sheet.png", _cfg(), samples_per_class=3, size=48)
    sheet = cv2.imread(str(path))
    assert sheet.shape[0] == len(EXPRESSIONS) * (48 + 14)
    assert sheet.shape[1] == 110 + 3 * 48
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
