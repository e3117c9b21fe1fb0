"""In-the-wild nuisance: cluttered backgrounds, occluders, lighting, blur, noise, JPEG.

Occluders are drawn in face units (they move with the face) and are placed so that they rarely
hide the mouth entirely and never hide both eyes: a covered expression would be unlearnable noise,
not a realistic difficulty.
"""

from __future__ import annotations

import cv2
import numpy as np

from psr.data.synthetic.config import NuisanceConfig
from psr.data.synthetic.identity import Identity
from psr.data.synthetic.render import Painter

OCCLUDERS: tuple[str, ...] = ("hand", "object", "hair", "scarf", "hat")
_OCCLUDER_CDF = np.cumsum([0.3, 0.25, 0.2, 0.13, 0.12])[:-1]
_HEAD_AREA = np.pi * 0.74 * 0.93  # face units^2, to report the covered share


def _muted(bgr: np.ndarray) -> tuple[float, float, float]:
    """Halve the saturation of a random colour: real scenes are rarely pure hues."""
    b, g, r = 0.5 * bgr + 0.5 * bgr.mean()
    return (float(b), float(g), float(r))


def _random_color(rng: np.random.Generator) -> tuple[float, float, float]:
    return _muted(rng.uniform(0, 255, 3))


def _paint(canvas: np.ndarray, color: tuple[float, float, float]) -> tuple[float, ...]:
    if canvas.ndim == 2:
        return (0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2],)
    return color


def draw_background(canvas: np.ndarray, rng: np.random.Generator, clutter: float) -> None:
    """Smooth colour gradient plus random shapes (furniture, text, foliage stand-ins)."""
    h, w = canvas.shape[:2]
    corners = rng.uniform(20, 235, (2, 2, 3))
    corners = (0.5 * corners + 0.5 * corners.mean(axis=2, keepdims=True)).astype(np.uint8)
    if canvas.ndim == 2:
        corners = cv2.cvtColor(corners, cv2.COLOR_BGR2GRAY)
    canvas[...] = cv2.resize(corners, (w, h), interpolation=cv2.INTER_LINEAR)
    n = int(rng.integers(0, 1 + round(8 * clutter)))
    side = max(h, w)
    # One draw for all shapes: kind, colour (3), position (2), size, then 10 shape coordinates.
    for r in rng.uniform(size=(n, 17)):
        color = _paint(canvas, _muted(255 * r[1:4]))
        kind = int(4 * r[0])
        x, y, size = r[4] * w, r[5] * h, (0.05 + 0.45 * r[6]) * side
        d = 2 * r[7:] - 1  # -1..1
        if kind == 0:
            p1, p2 = (int(x), int(y)), (int(x + size * d[0]), int(y + size * d[1]))
            cv2.rectangle(canvas, p1, p2, color, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.circle(canvas, (int(x), int(y)), max(1, int(size / 2)), color, -1, cv2.LINE_AA)
        elif kind == 2:
            end = (int(x + 2 * size * d[0]), int(y + 2 * size * d[1]))
            thick = max(1, int(side * (0.01 + 0.04 * r[9])))
            cv2.line(canvas, (int(x), int(y)), end, color, thick, cv2.LINE_AA)
        else:
            pts = np.stack([x + size * d[:5], y + size * d[5:]], 1)
            cv2.fillPoly(canvas, [pts.astype(np.int32)], color, cv2.LINE_AA)


def _polygon_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def draw_occluder(
    canvas: np.ndarray,
    matrix: np.ndarray,
    rng: np.random.Generator,
    ident: Identity,
) -> tuple[str, float]:
    """Draw one occluder over the face; returns (kind, approximate share of the face covered)."""
    kind = OCCLUDERS[int(np.searchsorted(_OCCLUDER_CDF, rng.uniform()))]
    p = Painter(canvas, matrix)
    side = 1.0 if rng.uniform() < 0.5 else -1.0
    a = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    if kind == "hand":
        # A palm over one cheek, reaching at most one mouth corner, with finger strips upwards.
        cx, cy = side * rng.uniform(0.5, 0.8), rng.uniform(0.0, 0.6)
        r = rng.uniform(0.2, 0.3)
        shape = np.stack([cx + r * np.cos(a), cy + 1.2 * r * np.sin(a)], 1)
        p.fill(shape, ident.skin)
        for k in range(4):
            fx = cx - side * r * 0.6 + side * k * r * 0.4
            finger = np.array(
                [
                    [fx - 0.04, cy],
                    [fx + 0.04, cy],
                    [fx + 0.035, cy - 2.1 * r],
                    [fx - 0.035, cy - 2.1 * r],
                ]
            )
            p.fill(finger, tuple(c * 0.96 for c in ident.skin))
        area = _polygon_area(shape) + 4 * 0.08 * 2.1 * r
    elif kind == "object":
        # A cup, phone or microphone in front of one side of the face.
        cx, cy = side * rng.uniform(0.5, 0.9), rng.uniform(-0.3, 0.9)
        w, h = rng.uniform(0.15, 0.35), rng.uniform(0.2, 0.5)
        shape = np.array([[cx - w, cy - h], [cx + w, cy - h], [cx + w, cy + h], [cx - w, cy + h]])
        if rng.uniform() < 0.5:
            shape = np.stack([cx + w * np.cos(a), cy + h * np.sin(a)], 1)
        p.fill(shape, _random_color(rng))
        area = _polygon_area(shape)
    elif kind == "hair":
        # A lock of hair falling over one eye and cheek.
        x0 = side * rng.uniform(0.1, 0.35)
        shape = np.array(
            [
                [x0, -0.9],
                [x0 + side * 0.25, -0.9],
                [side * 0.8, 0.5],
                [side * 0.55, 0.6],
                [x0 + side * 0.05, -0.1],
            ]
        )
        p.fill(shape, ident.hair)
        area = _polygon_area(shape)
    elif kind == "scarf":
        # Covers the chin and neck, stopping below the lower lip.
        top = ident.mouth_y + rng.uniform(0.2, 0.35)
        shape = np.array(
            [[-1.2, top + 0.08], [0.0, top], [1.2, top + 0.08], [1.2, 1.3], [-1.2, 1.3]]
        )
        p.fill(shape, _random_color(rng))
        area = _polygon_area(np.array([[-0.6, top], [0.6, top], [0.4, 0.95], [-0.4, 0.95]]))
    else:
        # A cap or hat over the forehead, stopping above the brows.
        brim = ident.eye_y - ident.brow_gap - rng.uniform(0.12, 0.25)
        crown = np.stack([0.85 * np.cos(a[10:]), brim - 0.05 + 0.75 * np.sin(a[10:])], 1)
        shape = np.concatenate([crown, [[1.0, brim], [-1.0, brim]]])
        p.fill(shape, _random_color(rng))
        area = _polygon_area(np.array([[-0.7, brim], [0.7, brim], [0.5, -0.95], [-0.5, -0.95]]))
    p.paint()
    return kind, min(area / _HEAD_AREA, 1.0)


def apply_lighting(image: np.ndarray, rng: np.random.Generator, strength: float) -> dict:
    """Global gain, a smooth shading gradient and (colour images) a colour cast, in place."""
    gain = float(np.exp(rng.normal(0, 0.25 * strength)))
    gradient = float(rng.uniform(0, 0.6 * strength))
    angle = rng.uniform(0, 2 * np.pi)
    h, w = image.shape[:2]
    # A 2x2 field of gains, bilinearly resized: a planar shading across the picture.
    dx, dy = np.cos(angle) * gradient, np.sin(angle) * gradient
    field = gain * np.array([[1 - dx - dy, 1 + dx - dy], [1 - dx + dy, 1 + dx + dy]], np.float32)
    field = cv2.resize(np.clip(field, 0.2, 2.0), (w, h), interpolation=cv2.INTER_LINEAR)
    if image.ndim == 3:
        cast = np.exp(rng.normal(0, 0.08 * strength, 3)).astype(np.float32)
        field = field[..., None] * cast
    image[...] = np.clip(image * field, 0, 255).astype(np.uint8)
    return {"light_gain": gain, "light_gradient": gradient}


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < 0.3:
        return image
    return cv2.GaussianBlur(image, (0, 0), sigma)


def add_noise(image: np.ndarray, rng: np.random.Generator, std: float) -> np.ndarray:
    if std <= 0:
        return image
    noisy = image + std * rng.standard_normal(image.shape, dtype=np.float32)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip through JPEG at ``quality`` (blocking and ringing artefacts)."""
    if quality <= 0:
        return image
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV failed to encode a JPEG")
    flag = cv2.IMREAD_GRAYSCALE if image.ndim == 2 else cv2.IMREAD_COLOR
    return cv2.imdecode(buf, flag)


def sample_degradations(rng: np.random.Generator, cfg: NuisanceConfig, face_px: float) -> dict:
    """Blur sigma (source px), noise std and JPEG quality (0 = none) for one picture."""
    sigma = rng.uniform(0, cfg.max_blur) * face_px if rng.uniform() < cfg.blur_rate else 0.0
    noise = rng.uniform(0, cfg.max_noise) if rng.uniform() < cfg.noise_rate else 0.0
    quality = 0
    if rng.uniform() < cfg.jpeg_rate:
        quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    return {"blur_sigma": float(sigma), "noise_std": float(noise), "jpeg_quality": quality}
