"""The champion gate and the pyfunc's input contract (no registry needed)."""

import numpy as np
import pandas as pd
import pytest

from pipeline.params import RegisterParams
from pipeline.pyfunc import BadInput, as_images
from pipeline.stages.register import decide
from psr.serving import decode_photos


def test_first_version_becomes_champion():
    decision = decide(0.5, None, RegisterParams())
    assert decision.promote and decision.reason == "no champion yet"


@pytest.mark.parametrize(
    ("new", "champion", "greater", "margin", "promote"),
    [
        (0.80, 0.70, True, 0.0, True),
        (0.70, 0.80, True, 0.0, False),
        (0.70, 0.70, True, 0.0, False),  # a tie keeps the champion
        (0.71, 0.70, True, 0.02, False),  # not by more than the margin
        (0.30, 0.40, False, 0.0, True),  # a loss: lower is better
        (0.50, 0.40, False, 0.0, False),
    ],
)
def test_gate_compares_on_the_configured_direction(new, champion, greater, margin, promote):
    cfg = RegisterParams(greater_is_better=greater, min_improvement=margin)
    decision = decide(new, champion, cfg, champion_version="3")
    assert decision.promote is promote
    assert decision.champion == champion and decision.champion_version == "3"


@pytest.mark.parametrize(
    ("new", "baseline", "margin", "promote"),
    [
        (0.125, 0.125, 0.02, False),  # predicts the majority class for every image
        (0.14, 0.125, 0.02, False),  # not by more than the margin
        (0.20, 0.125, 0.02, True),
        (0.125, 0.125, None, True),  # no floor
    ],
)
def test_a_version_must_beat_the_majority_baseline(new, baseline, margin, promote):
    cfg = RegisterParams(baseline_margin=margin)
    decision = decide(new, None, cfg, baseline=baseline)
    assert decision.promote is promote
    if not promote:
        assert "majority-class baseline (0.1250)" in decision.reason


def test_the_floor_applies_before_the_champion_comparison():
    decision = decide(0.3, 0.1, RegisterParams(), champion_version="2", baseline=0.3)
    assert not decision.promote and "majority-class baseline" in decision.reason


def test_champion_of_another_dataset_is_not_compared():
    decision = decide(0.99, 0.1, RegisterParams(), champion_version="1", same_dataset=False)
    assert not decision.promote and "another dataset" in decision.reason


def test_pyfunc_inputs():
    gray = np.zeros((2, 5, 6), dtype=np.uint8)
    assert as_images(gray).shape == (2, 5, 6, 1)
    assert as_images(np.ones((1, 4, 4, 3), dtype=np.int64)).dtype == np.uint8
    assert as_images(np.full((1, 4, 4, 3), 7.0)).tolist() == np.full((1, 4, 4, 3), 7).tolist()
    for bad, message in (
        (np.zeros((1, 4, 4, 2), dtype=np.uint8), r"got shape \[1, 4, 4, 2\]; expected .*C in"),
        (np.full((1, 4, 4, 1), 300), r"pixel values span 300\.\.300"),
        (np.full((1, 4, 4, 3), 0.5), r"not integers \(0\.\.1 floats: multiply by 255\)"),
        (np.full((1, 4, 4, 3), 3.5), r"not integers; expected"),
        (np.zeros((0, 4, 4, 3)), r"got shape \[0, 4, 4, 3\]"),
        (np.array([[[[1, 2, 3]]]], dtype=object), "got object values"),
        ([np.zeros((2, 2, 3)).tolist(), np.zeros((3, 3, 3)).tolist()], "different sizes"),
        (np.zeros((65, 512, 512, 1), dtype=np.uint8), "exceed 16777216 pixels per request"),
    ):
        with pytest.raises(BadInput, match=message):
            as_images(bad)
    # a table is a photo request: it must have the base64 "image" column
    with pytest.raises(BadInput, match=r"no 'image' column \(got \['a'\]\); expected"):
        decode_photos(pd.DataFrame({"a": [1]}))
    with pytest.raises(BadInput, match=r"no 'image' field \(got \['a'\]\)"):
        decode_photos({"a": np.array(["x"])})
