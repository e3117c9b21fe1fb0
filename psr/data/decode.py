"""Image files -> RGB arrays, strictly: the one decoder of ``psr prepare`` and ``psr predict``.

- Truncated or corrupt files are errors naming the file (``cv2.imread`` would return a
  truncated JPEG with its missing rows flat grey; ``cv2.imdecode`` refuses it).
- Images above ``PSR_MAX_IMAGE_PIXELS`` pixels (default 100 million) are refused before they
  are decoded, from the size in their header: decoding a 20000 x 20000 PNG takes GBs.
- Gray, RGBA and 16-bit files are converted; the EXIF orientation is applied.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

MAX_PIXELS_ENV = "PSR_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 100_000_000


def max_pixels() -> int:
    raw = os.environ.get(MAX_PIXELS_ENV, "")
    if not raw:
        return DEFAULT_MAX_PIXELS
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{MAX_PIXELS_ENV}={raw!r}: expected a positive pixel count")
    return int(raw)


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to RGB uint8 ``[H, W, 3]``; ValueError naming the file when it is
    missing, empty, too large, truncated or not an image."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise ValueError(f"{path}: cannot read the file ({err.strerror or err})") from err
    if data.size == 0:
        raise ValueError(f"{path}: empty file")
    limit = max_pixels()
    size = _header_size(path, limit)
    if size is not None and size[0] * size[1] > limit:
        raise ValueError(
            f"{path}: {size[0]}x{size[1]} is {size[0] * size[1] / 1e6:.3g} megapixels, above "
            f"the limit of {limit / 1e6:.3g} (set {MAX_PIXELS_ENV} to allow it)"
        )
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)  # -> BGR uint8, whatever the stored format
    if image is None:
        raise ValueError(f"{path}: not a readable image (truncated, corrupt or unsupported)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _header_size(path: Path, limit: int) -> tuple[int, int] | None:
    """(width, height) from the file header (Pillow reads only that); None if it cannot tell."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # ours is the limit
            with Image.open(path) as image:
                return image.size
    except Image.DecompressionBombError:  # over twice Pillow's own limit: over ours too
        raise ValueError(
            f"{path}: over {2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.3g} megapixels, above the "
            f"limit of {limit / 1e6:.3g} (set {MAX_PIXELS_ENV} to allow it)"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None
