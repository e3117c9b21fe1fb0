import cv2
import numpy as np
import pytest

from psr.data.decode import read_image


def _photo(tmp_path, ext, size=(60, 80)):
    y, x = np.mgrid[0 : size[0], 0 : size[1]]
    image = np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)
    path = tmp_path / f"photo{ext}"
    cv2.imwrite(str(path), image)
    return path


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_a_truncated_file_is_an_error_naming_it(tmp_path, ext):
    path = _photo(tmp_path, ext)
    assert read_image(path).shape == (60, 80, 3)
    for keep in (0.5, 0.9):
        path.write_bytes(_photo(tmp_path, ext).read_bytes()[: int(path.stat().st_size * keep)])
        with pytest.raises(ValueError, match=f"{path}: not a readable image \\(truncated"):
            read_image(path)


def test_images_above_the_pixel_limit_are_refused_before_decoding(tmp_path, monkeypatch):
    path = _photo(tmp_path, ".png")
    monkeypatch.setenv("PSR_MAX_IMAGE_PIXELS", "4000")  # 80 x 60 = 4800
    limit = r"80x60 is 0.0048 megapixels, above the limit of 0.004 \(set PSR_MAX_IMAGE_PIXELS"
    with pytest.raises(ValueError, match=limit):
        read_image(path)
    monkeypatch.setenv("PSR_MAX_IMAGE_PIXELS", "4800")
    assert read_image(path).shape == (60, 80, 3)
    monkeypatch.setenv("PSR_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="expected a positive pixel count"):
        read_image(path)


def _png_header(tmp_path, width, height):
    """A PNG whose header says width x height (no pixel data: nothing should decode it)."""
    import struct
    import zlib

    def chunk(kind, body):
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path = tmp_path / "huge.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [12_000, 20_000])  # over our limit; over Pillow's bomb limit
def test_a_huge_image_is_refused_from_its_header(tmp_path, side):
    with pytest.raises(ValueError, match="megapixels, above the limit of 100"):
        read_image(_png_header(tmp_path, side, side))
