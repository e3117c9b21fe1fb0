import cv2
import numpy as np
import pytest

from psr.align import (
    TEMPLATE,
    align_face,
    alignment_matrix,
    five_from_ibug68,
    template_points,
)


def similarity(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    c, s = np.cos(a) * scale, np.sin(a) * scale
    return np.array([[c, -s, shift[0]], [s, c, shift[1]]])


def dots_image(points: np.ndarray, hw: tuple[int, int], radius: int) -> np.ndarray:
    """Dark image with a bright disk at each point (sub-pixel centres via cv2's shift bits)."""
    image = np.zeros((*hw, 3), np.uint8)
    for x, y in points:
        centre = (round(x * 16), round(y * 16))
        cv2.circle(image, centre, radius * 16, (255, 255, 255), -1, cv2.LINE_AA, shift=4)
    return image


def blob_centres(image: np.ndarray, near: np.ndarray, window: int) -> np.ndarray:
    """Intensity-weighted centre of the pixels around each expected point."""
    gray = image[:, :, 0].astype(np.float64)
    out = []
    for x, y in near:
        x0, y0 = max(0, round(x) - window), max(0, round(y) - window)
        patch = gray[y0 : round(y) + window + 1, x0 : round(x) + window + 1]
        ys, xs = np.mgrid[: patch.shape[0], : patch.shape[1]]
        out.append([x0 + (xs * patch).sum() / patch.sum(), y0 + (ys * patch).sum() / patch.sum()])
    return np.array(out)


@pytest.mark.parametrize(
    ("angle", "scale", "size", "radius"),
    [(0, 1.0, 112, 2), (25, 2.5, 112, 5), (-15, 0.8, 100, 2), (10, 6.0, 64, 12)],
)
def test_alignment_puts_the_landmarks_where_the_template_says(angle, scale, size, radius):
    """A face placed by a known similarity (tilted, scaled, shifted) is warped back so that its
    five points land on the template within a pixel; the last case shrinks 6.6x (pre-shrink)."""
    matrix = similarity(angle, scale, (200, 150))
    landmarks = np.c_[TEMPLATE, np.ones(5)] @ matrix.T  # template face -> image pixels
    image = dots_image(landmarks, (900, 1000), radius)
    aligned = align_face(image, landmarks, size)
    assert aligned.shape == (size, size, 3)
    expected = template_points(size)
    found = blob_centres(aligned, expected, window=max(3, round(2.5 * radius * size / 112 / scale)))
    np.testing.assert_allclose(found, expected, atol=1.0)


def test_alignment_matrix_inverts_the_placing_similarity():
    matrix = similarity(30, 1.7, (40, -12))
    landmarks = np.c_[TEMPLATE, np.ones(5)] @ matrix.T
    back = alignment_matrix(landmarks, 112)
    np.testing.assert_allclose(np.c_[landmarks, np.ones(5)] @ back.T, TEMPLATE, atol=1e-6)
    # and a 56-pixel crop is the same map at half the scale
    np.testing.assert_allclose(alignment_matrix(landmarks, 56), back / 2, atol=1e-6)


def test_the_fit_is_least_squares_over_all_five_points():
    """One landmark off by 10 px moves the fit (no point is dropped as an outlier), and no other
    similarity brings the five closer to the template."""
    landmarks = template_points(200) + 10
    landmarks[2] += (10.0, 0.0)  # the nose tip
    matrix = alignment_matrix(landmarks, 112)

    def cost(m: np.ndarray) -> float:
        return float(((np.c_[landmarks, np.ones(5)] @ m.T - TEMPLATE) ** 2).sum())

    a, b = matrix[0, 0], matrix[1, 0]  # a similarity is [[a, -b, tx], [b, a, ty]]
    assert np.isclose(matrix[1, 1], a) and np.isclose(matrix[0, 1], -b)
    others = [0, 1, 3, 4]  # a robust fit would put these four exactly on the template
    assert np.abs(np.c_[landmarks[others], np.ones(4)] @ matrix.T - TEMPLATE[others]).max() > 0.1
    rng = np.random.default_rng(0)
    for step in rng.normal(scale=1e-3, size=(50, 4)):
        da, db, dx, dy = step
        other = np.array(
            [[a + da, -(b + db), matrix[0, 2] + dx], [b + db, a + da, matrix[1, 2] + dy]]
        )
        assert cost(other) > cost(matrix)


def test_gray_images_stay_gray():
    landmarks = template_points(200) + 10
    assert align_face(np.zeros((300, 300), np.uint8), landmarks, 48).shape == (48, 48)


def test_synthetic_faces_eyes_land_near_the_template():
    """The generator's own landmarks of upright faces, tilted by the generator, aligned: the eye
    centres land within a couple of pixels of the template's (112 px crop). The cartoon's
    proportions are not the template's, so the least-squares fit leaves a small residual."""
    from psr.data.synthetic.config import NuisanceConfig, SynthConfig
    from psr.data.synthetic.generator import PhotoView, generate_samples

    cfg = SynthConfig(test=10, face_size=(60.0, 160.0), nuisance=NuisanceConfig(rotation_deg=25))
    errors = []
    for sample in generate_samples(cfg, "test", PhotoView(), allow_not_a_face=False):
        five = five_from_ibug68(sample.landmarks)
        matrix = alignment_matrix(five, 112)
        eyes = np.c_[five[:2], np.ones(2)] @ matrix.T
        errors.append(np.linalg.norm(eyes - template_points(112)[:2], axis=1))
    errors = np.array(errors)
    assert errors.mean() < 2.0 and errors.max() < 6.0, errors.round(1)


def test_bad_landmarks_are_refused():
    with pytest.raises(ValueError, match=r"five finite \(x, y\) landmarks, got shape \(4, 2\)"):
        alignment_matrix(np.zeros((4, 2)), 112)
    with pytest.raises(ValueError, match="five finite"):
        alignment_matrix(np.full((5, 2), np.nan), 112)
    with pytest.raises(ValueError, match="degenerate landmarks"):
        alignment_matrix(np.ones((5, 2)), 112)
    with pytest.raises(ValueError, match="size must be >= 8"):
        alignment_matrix(TEMPLATE, 4)
    with pytest.raises(ValueError, match="68 iBUG landmarks"):
        five_from_ibug68(np.zeros((5, 2)))
