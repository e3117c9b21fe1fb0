import cv2
import numpy as np
import pytest

from psr.data.synthetic.frontal import frontal_face
from psr.detect import Box, HaarDetector, YuNetDetector, create_detector, crop_face, to_rgb


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
