import numpy as np
from detectors import Labelled, iou, markdown, match, real_photos, score, synthetic_photos

from psr.detect import Box, HaarDetector


def test_box_iou_and_greedy_matching():
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == 50 / 150
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    truth = [(0, 0, 10, 10), (50, 50, 10, 10)]
    found = [Box(1, 1, 10, 10, score=0.5), Box(0, 0, 10, 10, score=0.9), Box(200, 0, 9, 9)]
    # the best-scored detection takes the first face; the weaker duplicate is a false positive
    assert match(found, truth, 0.3) == [1, -1]
    assert match([], truth, 0.3) == [-1, -1]


class _Fixed:
    """A 'detector' that returns given boxes, to check the scoring arithmetic."""

    def __init__(self, boxes):
        self.boxes = boxes

    def detect(self, image):
        return self.boxes


def test_score_counts_recall_false_positives_and_landmark_error():
    truth = np.array([[10, 10], [20, 10], [15, 15], [11, 20], [19, 20]], float)
    item = Labelled("x", np.zeros((40, 40, 3), np.uint8), [(5, 5, 20, 20)], [truth])
    # every point 1 px off, eyes 10 px apart: error 0.1
    shifted = tuple(map(tuple, truth + np.array([1.0, 0.0])))
    found = [Box(5, 5, 20, 20, 0.9, landmarks=shifted), Box(30, 30, 5, 5, 0.8)]
    row = score(_Fixed(found), [item, item], 0.5).row()
    assert row["faces"] == 2 and row["recall"] == 1.0 and row["false_positives"] == 2
    assert row["mean_iou"] == 1.0 and abs(row["landmark_error"] - 0.1) < 1e-9
    assert "| s (2) | d | 1.000 | 1.000 | 2 | 0.100 |" in markdown(
        [{"set": "s", "detector": "d", **row}]
    )


def test_the_labelled_sets_load_and_haar_is_scored():
    photos = synthetic_photos(3, clean=True)
    assert len(photos) == 3 and all(len(p.boxes) == 1 and p.landmarks for p in photos)
    real = real_photos()
    assert any(p.name == "grace_hopper.jpg" and p.boxes for p in real)
    row = score(HaarDetector(), photos + real, 0.3).row()
    assert row["faces"] == 3 + sum(len(p.boxes) for p in real) and row["ms_per_image"] > 0
