"""Face tracks across video frames: the IoU tracker, smoothing, and a synthetic video."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from psr.cli import main
from psr.data.synthetic.frontal import frontal_face
from psr.face_tracks import IoUTracker, iou, track_faces
from psr.inference import FaceRecord, Frame, FrameResult, Predictor, iter_frames
from psr.models import create_model, save_model

NAMES = ("neutral", "happiness", "surprise")
FPS = 10
FACE = 110


def test_iou_of_boxes():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_tracker_keeps_ids_matches_greedily_and_starts_new_ones():
    tracker = IoUTracker(threshold=0.3, patience=1)
    assert tracker.update([(0, 0, 10, 10), (100, 0, 10, 10)]) == [0, 1]
    # moved a little, order swapped: the ids follow the boxes, not their order
    assert tracker.update([(102, 1, 10, 10), (2, 0, 10, 10)]) == [1, 0]
    assert tracker.update([(3, 0, 10, 10), (50, 50, 10, 10)]) == [0, 2]  # a newcomer
    assert tracker.update([(4, 0, 10, 10)]) == [0]  # track 1 missed twice, 2 once
    assert tracker.update([(104, 1, 10, 10), (50, 50, 10, 10)]) == [3, 2]  # 1 ended
    # two boxes competing for one track: the larger overlap wins, the other is new
    assert tracker.update([(4, 0, 10, 10), (7, 0, 10, 10)]) == [0, 4]


def test_tracker_rejects_bad_settings():
    with pytest.raises(ValueError, match="IoU threshold"):
        IoUTracker(threshold=0)
    with pytest.raises(ValueError, match="patience"):
        IoUTracker(patience=-1)
    with pytest.raises(ValueError, match="smooth"):
        list(track_faces([], smooth=1.5))


def _result(source: str, index: int, boxes_probs) -> FrameResult:
    frame = Frame(source, index, np.zeros((4, 4, 3), np.uint8), index / FPS)
    records = [
        FaceRecord(source, index, box, None, None, dict(zip(NAMES, p, strict=True)))
        for box, p in boxes_probs
    ]
    return FrameResult(frame, records)


def test_smoothing_is_an_exponential_average_per_track_and_video():
    a, b = (0, 0, 10, 10), (50, 0, 10, 10)
    results = [
        _result("v.mp4", 0, [(a, (1.0, 0.0, 0.0)), (b, (0.0, 0.0, 1.0))]),
        _result("v.mp4", 1, [(a, (0.0, 1.0, 0.0)), (b, (0.0, 0.0, 1.0))]),
        _result("w.mp4", 0, [(a, (0.0, 1.0, 0.0))]),  # another video: fresh tracks
    ]
    out = [r for result in track_faces(results, smooth=0.25) for r in result.records]
    assert [r.track for r in out] == [0, 1, 0, 1, 0]
    second = out[2]
    assert list(second.probabilities.values()) == pytest.approx([0.75, 0.25, 0.0])
    assert (second.expression, second.probability) == ("neutral", pytest.approx(0.75))
    assert out[3].probabilities["surprise"] == pytest.approx(1.0)
    assert list(out[4].probabilities.values()) == pytest.approx([0.0, 1.0, 0.0])
    unsmoothed = [r for result in track_faces(results) for r in result.records]
    assert unsmoothed[2].probabilities == results[1].records[0].probabilities


def test_still_images_and_problems_pass_through_untracked():
    still = FrameResult(Frame("a.jpg", None, np.zeros((4, 4, 3), np.uint8)), [])
    error = FaceRecord("b.jpg", None, None, None, None, status="error", message="b.jpg: bad")
    out = list(track_faces([still, FrameResult(None, [error])]))
    assert out[0] is still and out[1].records == [error]


def _frame(faces: list[tuple[int, int]]) -> np.ndarray:
    canvas = np.full((360, 640, 3), (110, 140, 170), np.uint8)
    for x, y in faces:
        canvas[y : y + FACE, x : x + FACE] = frontal_face(FACE)[:, :, None]
    return canvas


def _positions(i: int) -> list[tuple[int, int]]:
    """Face A walks right 12 px a frame; face B appears at frame 4 and walks left."""
    faces = [(30 + 12 * i, 40)]
    if i >= 4:
        faces.append((480 - 10 * (i - 4), 200))
    return faces


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "walk.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (640, 360))
    assert writer.isOpened()
    for i in range(12):
        writer.write(cv2.cvtColor(_frame(_positions(i)), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    cfg = {"num_classes": 3, "image_size": 64, "width": 0.125, "sr_res_blocks": 1}
    cfg["sr_features"] = 8
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    model = create_model("psr", **cfg)
    save_model(path, model, config={"name": "psr", **cfg}, class_names=NAMES, image_size=64)
    return path


def _nearest(box, positions) -> int:
    x, y = box[0] + box[2] / 2, box[1] + box[3] / 2
    centres = [(px + FACE / 2, py + FACE / 2) for px, py in positions]
    return int(np.argmin([np.hypot(x - cx, y - cy) for cx, cy in centres]))


def test_video_faces_keep_their_track_and_time(video, checkpoint):
    predictor = Predictor.from_checkpoint(checkpoint)  # the default detector (MTCNN)
    results = list(track_faces(predictor.predict_frames(iter_frames([video], every=2))))
    assert [r.frame.index for r in results] == [0, 2, 4, 6, 8, 10]
    tracks: dict[int, set[int]] = {0: set(), 1: set()}  # face A / B -> the track ids they got
    for result in results:
        index = result.frame.index
        records = result.records
        assert all(r.status == "ok" for r in records)
        assert len(records) == len(_positions(index))
        for record in records:
            assert record.time_s == pytest.approx(index / FPS)
            tracks[_nearest(record.box, _positions(index))].add(record.track)
    assert tracks == {0: {0}, 1: {1}}  # one id per face for the whole video; B's is new


@pytest.mark.slow
def test_cli_writes_time_and_track_columns_through_onnxruntime(video, checkpoint, tmp_path):
    out = tmp_path / "faces.csv"
    args = ["predict", str(video), "--checkpoint", str(checkpoint), "--every", "2"]
    onnx = ["--runtime", "onnx", "--threads", "1"]
    assert main([*args, *onnx, "--csv", str(out), "--smooth", "0.5"]) == 0
    table = pd.read_csv(out)
    assert list(table.columns[:4]) == ["source", "frame", "time_s", "track"]
    assert table["time_s"].tolist() == pytest.approx((table["frame"] / FPS).tolist())
    assert sorted(table["track"].unique()) == [0, 1]
    assert table.groupby("track")["frame"].min().tolist() == [0, 4]
    probs = table[[f"p_{n}" for n in NAMES]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    assert main([*args, "--smooth", "0"]) == 2  # a clear error, no run
