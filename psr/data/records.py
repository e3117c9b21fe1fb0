"""What a reader yields: one lightweight record per image, and how to load its pixels.

Readers never decode images: a record carries a reference (a CSV row's byte range, an image file
and an optional face box) that :func:`load_image` turns into pixels later, in a worker process.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

FER_SIDE = 48  # FER2013 images are 48x48 grayscale, stored as 2304 space-separated values


@dataclass(frozen=True, slots=True)
class PixelRow:
    """A FER2013 image as a pixel string: bytes ``[start, stop)`` of ``path``, on line ``line``."""

    path: str
    line: int
    start: int
    stop: int


@dataclass(frozen=True, slots=True)
class ImageFile:
    """An image file, optionally cropped to a face box ``(x, y, w, h)`` widened by ``margin``
    (a fraction of the box size on every side)."""

    path: str
    box: tuple[int, int, int, int] | None = None
    margin: float = 0.0
    listed_at: str | None = None  # "<list file> line <n>" that named it, for error messages


ImageRef = PixelRow | ImageFile


@dataclass(frozen=True, slots=True)
class Record:
    """One image of a dataset: its split, a stable id, where it came from and its label.

    ``label`` indexes the reader's ``class_names``. ``votes`` are raw crowd votes over the
    reader's ``vote_names``; ``target`` is the training target distribution over ``class_names``.
    """

    split: str
    id: str
    source: str
    label: int
    image: ImageRef
    votes: tuple[float, ...] | None = None
    target: tuple[float, ...] | None = None


@dataclass(frozen=True, slots=True)
class Skipped:
    """A row a reader rejected (e.g. a face box with a negative size): reported, not prepared."""

    split: str
    source: str
    reason: str


@dataclass
class DatasetSource:
    """A dataset as a reader sees it: its class order and a stream of records.

    ``protocol`` describes the choices that change results (vote mode, number of classes, how
    validation was carved); ``files`` names the input files; both end up in the manifest.
    """

    dataset: str
    class_names: tuple[str, ...]
    channels: int
    native_size: tuple[int, int] | None  # (H, W) when every image has one size, else None
    records: Iterable[Record | Skipped]
    vote_names: tuple[str, ...] | None = None
    protocol: dict[str, object] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)


def no_training_images(what: str, skipped: Iterable[Skipped]) -> ValueError:
    """The error for a source without a usable training image, listing why its rows were
    rejected (every box negative, every file missing) when it had some."""
    rejected = [s.reason for s in skipped if s.split == "train"]
    if not rejected:
        return ValueError(f"no {what} found")
    shown = "\n  ".join(rejected[:10])
    more = f"\n  ... and {len(rejected) - 10} more" if len(rejected) > 10 else ""
    return ValueError(f"no usable {what}: all {len(rejected)} were rejected:\n  {shown}{more}")


class BadImage(ValueError):
    """An image that cannot be loaded (missing, corrupt, wrong size): skipped and reported."""


def parse_pixels(text: bytes | str, where: str) -> np.ndarray:
    """A FER2013 pixel string -> uint8 ``[48, 48, 1]``; ``where`` names the file and row."""
    try:
        values = np.fromstring(text, dtype=np.int16, sep=" ")
    except ValueError as err:  # non-numeric data
        raise BadImage(f"{where}: pixels are not space-separated integers ({err})") from None
    if values.size != FER_SIDE * FER_SIDE:
        raise BadImage(f"{where}: {values.size} pixel values, expected {FER_SIDE * FER_SIDE}")
    if values.min() < 0 or values.max() > 255:
        raise BadImage(f"{where}: pixel values outside 0..255")
    return values.astype(np.uint8).reshape(FER_SIDE, FER_SIDE, 1)


def read_pixel_rows(refs: Sequence[PixelRow]) -> list[np.ndarray | BadImage]:
    """Load consecutive pixel rows of one CSV with one read (the common case in a chunk)."""
    out: list[np.ndarray | BadImage] = []
    with open(refs[0].path, "rb") as f:
        f.seek(refs[0].start)
        blob = f.read(refs[-1].stop - refs[0].start)
    base = refs[0].start
    for ref in refs:
        try:
            out.append(
                parse_pixels(
                    blob[ref.start - base : ref.stop - base], f"{ref.path} line {ref.line}"
                )
            )
        except BadImage as err:
            out.append(err)
    return out


def crop_box(
    image: np.ndarray, box: tuple[int, int, int, int], margin: float, where: str
) -> np.ndarray:
    """Crop a face box widened by ``margin`` on every side, clipped to the image.

    A box with a non-positive size, or that does not overlap the image at all, is bad input.
    """
    x, y, w, h = box
    height, width = image.shape[:2]
    if w <= 0 or h <= 0:
        raise BadImage(f"{where}: face box {box} has a non-positive size")
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise BadImage(f"{where}: face box {box} lies outside the {width}x{height} image")
    dx, dy = round(w * margin), round(h * margin)
    x0, y0 = max(0, x - dx), max(0, y - dy)
    x1, y1 = min(width, x + w + dx), min(height, y + h + dy)
    return image[y0:y1, x0:x1]


def read_image_file(ref: ImageFile) -> np.ndarray:
    """Decode an image file to RGB uint8 ``[H, W, 3]`` (cropped to its face box, if any)."""
    where = ref.path if ref.listed_at is None else f"{ref.path} ({ref.listed_at})"
    from psr.data.decode import read_image

    if not Path(ref.path).is_file():
        raise BadImage(f"{where}: image file is missing")
    try:
        rgb = read_image(ref.path)
    except ValueError as err:
        reason = str(err).removeprefix(f"{ref.path}: ")
        raise BadImage(f"{where}: {reason}") from None
    if ref.box is not None:
        rgb = crop_box(rgb, ref.box, ref.margin, where)
    return rgb


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``[H, W, C]`` to ``size`` = (H, W), keeping the channel axis (area when shrinking)."""
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    shrink = image.shape[0] > height or image.shape[1] > width
    out = cv2.resize(
        image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    )
    return out.reshape(height, width, image.shape[2])


def load_images(
    refs: Sequence[ImageRef], size: tuple[int, int], channels: int, *, align: bool = False
) -> list[np.ndarray | BadImage]:
    """Load, convert to ``channels`` and resize each reference -> uint8 ``[H, W, C]`` or the
    :class:`BadImage` that explains why it could not be loaded. ``align``: detect the largest
    face and align it by its landmarks (``psr.align``); an image without a face is bad."""
    pixel_rows = [r for r in refs if isinstance(r, PixelRow)]
    loaded: list[np.ndarray | BadImage]
    if len(pixel_rows) == len(refs) and _consecutive(pixel_rows):
        loaded = read_pixel_rows(pixel_rows)
    else:
        loaded = [_load_one(r) for r in refs]
    if align:  # lazily: MTCNN and its sessions only for datasets of whole photos
        from psr.align import align_largest_face
    out: list[np.ndarray | BadImage] = []
    for ref, image in zip(refs, loaded, strict=True):
        if isinstance(image, BadImage):
            out.append(image)
            continue
        if align:
            try:
                image = align_largest_face(image, max(size), name=_where(ref))
            except ValueError as err:
                out.append(BadImage(str(err)))
                continue
        image = _to_channels(image, channels)
        out.append(resize(image, size))
    return out


def _where(ref: ImageRef) -> str:
    if isinstance(ref, PixelRow):
        return f"{ref.path} line {ref.line}"
    return ref.path if ref.listed_at is None else f"{ref.path} ({ref.listed_at})"


def _load_one(ref: ImageRef) -> np.ndarray | BadImage:
    try:
        return read_pixel_rows([ref])[0] if isinstance(ref, PixelRow) else read_image_file(ref)
    except BadImage as err:
        return err


def _consecutive(refs: Sequence[PixelRow]) -> bool:
    return all(a.path == b.path and a.stop <= b.start for a, b in itertools.pairwise(refs))


def _to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    if image.shape[2] == channels:
        return image
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
    return np.repeat(image, 3, axis=2)
