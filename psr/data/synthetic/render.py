"""Draw one face, anti-aliased, from an identity and its facial actions.

Every part is a polygon or polyline in *face units* (the face box spans -1..1 on both axes, y
down). A 2x3 similarity matrix maps face units to canvas pixels, so rotation, scale and translation
cost nothing extra and the face is drawn directly at its source resolution (small faces are cheap).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from psr.data.synthetic.expressions import Actions
from psr.data.synthetic.identity import Color, Identity

_SHIFT = 4  # sub-pixel bits for cv2 drawing: coordinates are in 1/16 px
_ONE = 1 << _SHIFT
_T = np.linspace(-1.0, 1.0, 11)  # parameter along the mouth, corner to corner
_T9 = np.linspace(-1.0, 1.0, 9)  # along an eyelid
_T7 = np.linspace(-1.0, 1.0, 7)  # across a forehead line
_T5 = np.linspace(-1.0, 1.0, 5)
_BROW_T = np.linspace(0.0, 1.0, 7)  # inner end -> outer end of a brow
_BROW_ARCH = np.sin(np.pi * np.clip(_BROW_T * 1.1, 0, 1))
_HAIRLINE_U = np.linspace(1.0, -1.0, 9)
_ARC_U = np.linspace(0.0, 1.0, 18)
_NOSE_U = np.linspace(0.0, 1.0, 4)
_JAW = np.linspace(0, 20, 17).round().astype(int)[::-1]  # head points: right ear, chin, left ear
_MIRROR = np.array([-1.0, 1.0])  # x -> -x: the face's right side from its left
_CIRCLES: dict[int, np.ndarray] = {}  # unit circles by number of points (numpy calls are the cost)


@dataclass(frozen=True)
class FaceGeometry:
    """The shapes of one face in face units; ``landmarks`` follows the iBUG 68-point scheme."""

    head: np.ndarray
    hair_back: np.ndarray | None
    hair_cap: np.ndarray | None
    ears: tuple[np.ndarray, np.ndarray]
    eyes: tuple[np.ndarray, np.ndarray]  # almond outlines (upper lid then lower lid)
    irises: tuple[np.ndarray, np.ndarray]
    pupils: tuple[np.ndarray, np.ndarray]
    upper_lids: tuple[np.ndarray, np.ndarray]
    brows: tuple[np.ndarray, np.ndarray]
    nose_side: np.ndarray
    nose_base: np.ndarray
    nostrils: tuple[np.ndarray, np.ndarray]
    lips: np.ndarray
    mouth_inner: np.ndarray | None
    teeth: np.ndarray | None
    lip_line: np.ndarray
    creases: tuple[tuple[np.ndarray, float], ...]  # (polyline, darkness 0..1)
    glasses: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    landmarks: np.ndarray  # [68, 2]


def _xy(x: np.ndarray | float, y: np.ndarray) -> np.ndarray:
    """Points [N, 2] from coordinate arrays (np.stack's generality costs time at this scale)."""
    out = np.empty((len(y), 2))
    out[:, 0] = x
    out[:, 1] = y
    return out


def _unit_circle(n: int) -> np.ndarray:
    if n not in _CIRCLES:
        a = np.linspace(0, 2 * np.pi, n, endpoint=False)
        _CIRCLES[n] = np.stack([np.cos(a), np.sin(a)], axis=1)
    return _CIRCLES[n]


_CIRCLE_PAIR = np.concatenate([_unit_circle(16), 0.45 * _unit_circle(10)])  # iris, pupil


def _ellipse(cx: float, cy: float, ax: float, ay: float, n: int = 24) -> np.ndarray:
    return _unit_circle(n) * (ax, ay) + (cx, cy)


def _head(ident: Identity, chin_drop: float) -> np.ndarray:
    ax, ay = 0.74 * ident.face_width, 0.93 * ident.face_height
    circle = _unit_circle(40)
    x, y = ax * circle[:, 0], ay * circle[:, 1]
    lower = np.maximum(y / ay, 0)  # jaw narrows towards a chin, which drops when the mouth opens
    x = x * (1 - (0.12 + 0.22 * ident.jaw) * lower**2)
    y = y + chin_drop * lower**3 - 0.02
    return _xy(x, y)


def _eye(cx: float, cy: float, w: float, up: float, lo: float) -> dict[str, np.ndarray]:
    """The face's left eye (x > 0); the right one is its mirror image."""
    t = _T9  # inner corner -> outer corner
    x = cx + w * t
    bell = 1 - t**2
    upper = _xy(x, cy - up * bell * (1 + 0.25 * t) - 0.012 * t)  # outer corner slightly higher
    lower = _xy(x, cy + lo * bell - 0.012 * t)
    # Iris and pupil, clipped by the lids: the lid curves evaluated at each circle point's x.
    r = 0.46 * w
    circles = _CIRCLE_PAIR * r + (cx, cy + 0.1 * (lo - up))
    u = np.minimum(np.maximum((circles[:, 0] - cx) / w, -1), 1)
    top = cy - up * (1 - u**2) * (1 + 0.25 * u) - 0.012 * u
    bottom = cy + lo * (1 - u**2) - 0.012 * u
    circles[:, 1] = np.minimum(np.maximum(circles[:, 1], top), bottom)
    return {
        "outline": np.concatenate([upper, lower[-2:0:-1]]),
        "iris": circles[:16],
        "pupil": circles[16:],
        "upper": upper,
        # iBUG order for the left eye: inner corner, two upper, outer corner, two lower
        "marks": np.concatenate([upper[[0, 3, 5, 8]], lower[[5, 3]]]),
    }


def _brow(inner_x: float, y: float, act: Actions, thick: float) -> np.ndarray:
    """The face's left brow (x > 0) as a band: top edge inner -> outer, then bottom edge back."""
    t = _BROW_T
    x = inner_x + 0.36 * t
    raise_ = 0.13 * act.brow_raise * (1 - 0.2 * t) + 0.12 * act.brow_inner * (1 - t) ** 1.5
    centre = y - raise_ - 0.05 * _BROW_ARCH + 0.015 * t
    half = 0.5 * thick * (1.1 - 0.6 * t)
    return np.concatenate([_xy(x, centre - half), _xy(x, centre + half)[::-1]])


def build_geometry(ident: Identity, act: Actions) -> FaceGeometry:
    """Place every part of the face from identity and actions (face units, y down)."""
    open_ = max(act.mouth_open, 0.0)
    head = _head(ident, chin_drop=0.12 * open_)
    half_w = 0.74 * ident.face_width

    # Hair: a cap above the hairline, and for long hair a mass behind the head.
    hair_back = hair_cap = None
    if ident.hair_style == "long":
        arc = _ellipse(0, -0.15, 1.1 * half_w, 0.98, 28)[14:]  # top half, left to right
        hair_back = np.concatenate([arc, [[1.12 * half_w, 0.75], [-1.12 * half_w, 0.75]]])
    if ident.hair_style != "bald":
        line = ident.hairline + (0.22 if ident.hair_style == "fringe" else 0.0)
        ax, ay = 1.05 * half_w, 0.99 * ident.face_height
        phi = float(np.arcsin(min(max(-line / ay, -1.0), 1.0)))
        a = np.pi - phi + 0.25 + (np.pi + 2 * phi - 0.5) * _ARC_U
        arc = _xy(ax * np.cos(a), ay * np.sin(a) - 0.04)
        u = _HAIRLINE_U
        hairline = _xy(u * arc[-1, 0], line + 0.03 - 0.06 * (1 - u**2))
        hair_cap = np.concatenate([arc, hairline])

    ears = (
        _ellipse(-half_w + 0.02, -0.08, 0.08, 0.15, 12),
        _ellipse(half_w - 0.02, -0.08, 0.08, 0.15, 12),
    )

    # Eyes: widening opens the upper lid most; a smile's cheeks push the lower lid up.
    ex, ey, ew = 0.3 * ident.eye_spacing, ident.eye_y, 0.13 * ident.eye_size
    e = act.eye_open
    up = 0.068 * ident.eye_size * (1 + (1.0 if e > 0 else 0.75) * e)
    lo = 0.05 * ident.eye_size * (1 + 0.45 * e - 0.5 * max(act.cheek_raise, 0)) + 0.01 * max(e, 0)
    up, lo = max(up, 0.006), max(lo, 0.004)
    left = _eye(ex, ey, ew, up, lo)
    right = {name: pts * _MIRROR for name, pts in left.items()}

    # Brows: anger pulls the inner ends down and together, sadness/fear lift them.
    brow_y = ey - ident.brow_gap - 0.02
    inner_x = 0.1 + 0.03 * min(act.brow_inner, 0)
    thick = 0.065 * ident.brow_thickness
    left_brow = _brow(inner_x, brow_y, act, thick)
    brows = (left_brow * _MIRROR, left_brow)

    # Nose: the wrinkler lifts the base and flares the wings.
    nw = max(act.nose_wrinkle, 0.0)
    tip_y = 0.12 * ident.nose_length - 0.035 * nw
    wing = 0.11 + 0.02 * nw
    nose_side = np.array([[0.05, ey + 0.04], [0.065, tip_y - 0.1], [0.09, tip_y - 0.02]])
    nose_base = np.array(
        [
            [-wing, tip_y + 0.01],
            [-0.06, tip_y + 0.05],
            [0.0, tip_y + 0.04],
            [0.06, tip_y + 0.05],
            [wing, tip_y + 0.01],
        ]
    )
    nostrils = (
        _ellipse(-0.045, tip_y + 0.035, 0.025, 0.012, 8),
        _ellipse(0.045, tip_y + 0.035, 0.025, 0.012, 8),
    )

    # Mouth: a midline bent by curvature and asymmetry, opened around it.
    my = ident.mouth_y + 0.05 * open_ - 0.03 * nw
    mw = (
        0.23
        * ident.mouth_size
        * (1 + 0.35 * act.mouth_width)
        * (1 - 0.25 * open_ * (act.mouth_width < 0))
    )
    t = _T
    side_lift = np.maximum(np.sign(act.lip_asym) * t, 0.0) ** 2
    mid = my - 0.17 * act.mouth_curve * t**2 - 0.13 * abs(act.lip_asym) * side_lift
    x = mw * t * (1 + 0.12 * abs(act.lip_asym) * side_lift)
    bell = 1 - t**2
    upper_gap = 0.035 * open_ + 0.04 * nw  # the upper lip raiser bares the upper teeth
    lower_gap = 0.24 * open_ + 0.01 * nw
    upper_in = _xy(x, mid - upper_gap * bell)
    lower_in = _xy(x, mid + lower_gap * bell**0.8)
    lip_u, lip_l = 0.035 * ident.lip_thickness, 0.05 * ident.lip_thickness
    if act.mouth_width < 0:  # pressed lips get thinner
        lip_u, lip_l = lip_u * (1 + 0.6 * act.mouth_width), lip_l * (1 + 0.6 * act.mouth_width)
    cupid = 0.012 * np.cos(np.pi * t * 1.5) * bell
    upper_out = _xy(x, upper_in[:, 1] - lip_u * bell**0.7 - cupid)
    lower_out = _xy(x, lower_in[:, 1] + lip_l * bell**0.6)
    lips = np.concatenate([upper_out, lower_out[::-1]])
    gap = upper_gap + lower_gap
    mouth_inner = np.concatenate([upper_in, lower_in[::-1]]) if gap > 0.015 else None
    teeth = None
    show = act.teeth * min(gap / 0.06, 1.0)
    if mouth_inner is not None and show > 0.25:
        depth = np.minimum(0.05 * show * bell**0.5, (upper_gap + lower_gap) * bell * 0.9)
        teeth = np.concatenate([upper_in, _xy(x, upper_in[:, 1] + depth)[::-1]])
    lip_line = _xy(x, mid) if mouth_inner is None else upper_in

    # Creases: nasolabial folds (smile, disgust), forehead lines (raised brows), glabella (anger).
    creases: list[tuple[np.ndarray, float]] = []
    fold = max(act.cheek_raise, 0) + 0.7 * nw
    if fold > 0.2:
        for s in (-1.0, 1.0):
            corner = np.array([s * (mw + 0.02), mid[0 if s < 0 else -1] + 0.02])
            start = np.array([s * (wing + 0.02), tip_y - 0.02])
            bulge = np.array([s * 0.05, 0.0])
            curve = np.stack(
                [start, (start + corner) / 2 + bulge, corner + np.array([s * 0.03, 0.05])]
            )
            creases.append((curve, min(fold, 1.2) / 1.2))
    if act.brow_raise > 0.35:
        for k in range(2):
            u = _T7
            yk = brow_y - 0.2 - 0.09 * k - 0.1 * act.brow_raise
            creases.append((_xy(0.3 * u, yk + 0.03 * u**2), min(act.brow_raise, 1) * 0.8))
    if act.brow_inner < -0.35 or nw > 0.35:
        strength = min(max(-act.brow_inner, nw), 1.0)
        for s in (-1.0, 1.0):
            creases.append(
                (np.array([[s * 0.035, brow_y - 0.04], [s * 0.03, brow_y + 0.07]]), strength)
            )
    if nw > 0.3:
        for k in range(2):
            u = _T5
            yk = ey + 0.02 + 0.045 * k
            creases.append((_xy(0.07 * u, yk - 0.015 * (1 - u**2)), min(nw, 1.0)))

    glasses = None
    if ident.glasses:
        r = ew * 1.35
        glasses = (
            _ellipse(-ex, ey + 0.01, r, 0.8 * r, 16),
            _ellipse(ex, ey + 0.01, r, 0.8 * r, 16),
            np.array([[-ex + r, ey], [0.0, ey - 0.02], [ex - r, ey]]),
        )

    landmarks = np.concatenate(
        [
            head[_JAW],
            brows[0][[6, 5, 3, 1, 0]],
            left_brow[[0, 1, 3, 5, 6]],
            _xy(np.zeros(4), ey + (tip_y - 0.02 - ey) * _NOSE_U),
            nose_base,
            right["marks"][[3, 2, 1, 0, 5, 4]],
            left["marks"],
            upper_out[[0, 2, 3, 5, 7, 8, 10]],
            lower_out[[8, 7, 5, 3, 2]],
            upper_in[[0, 3, 5, 7, 10]],
            lower_in[[7, 5, 3]],
        ]
    )
    return FaceGeometry(
        head=head,
        hair_back=hair_back,
        hair_cap=hair_cap,
        ears=ears,
        eyes=(right["outline"], left["outline"]),
        irises=(right["iris"], left["iris"]),
        pupils=(right["pupil"], left["pupil"]),
        upper_lids=(right["upper"], left["upper"]),
        brows=brows,
        nose_side=nose_side,
        nose_base=nose_base,
        nostrils=nostrils,
        lips=lips,
        mouth_inner=mouth_inner,
        teeth=teeth,
        lip_line=lip_line,
        creases=tuple(creases),
        glasses=glasses,
        landmarks=landmarks,
    )


def transform(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Face units [N, 2] -> canvas pixels [N, 2] with a 2x3 affine matrix."""
    return points @ matrix[:, :2].T + matrix[:, 2]


class Painter:
    """Anti-aliased drawing in face units on a BGR or grayscale canvas.

    ``fill`` and ``line`` queue shapes; ``paint`` maps all their points to fixed-point pixels in
    one matrix product (per-shape numpy calls dominate the cost of small faces) and draws them in
    order.
    """

    def __init__(self, canvas: np.ndarray, matrix: np.ndarray) -> None:
        """``matrix`` (2x3) maps face units to canvas pixels."""
        self.canvas = canvas
        self.matrix = matrix
        self.px = float(np.hypot(matrix[0, 0], matrix[1, 0]))  # pixels per face unit
        self.gray = canvas.ndim == 2
        self._shapes: list[np.ndarray] = []
        self._styles: list[tuple[tuple[float, ...], int, bool]] = []  # colour, thickness, closed

    def _color(self, color: Color) -> tuple[float, ...]:
        if self.gray:
            b, g, r = color
            return (0.114 * b + 0.587 * g + 0.299 * r,)
        return color

    def fill(self, pts: np.ndarray, color: Color) -> None:
        self._shapes.append(pts)
        self._styles.append((self._color(color), -1, True))

    def line(self, pts: np.ndarray, color: Color, width: float, closed: bool = False) -> None:
        self._shapes.append(pts)
        self._styles.append((self._color(color), max(1, round(width * self.px)), closed))

    def paint(self) -> None:
        if not self._shapes:
            return
        fixed = np.rint(transform(np.concatenate(self._shapes), self.matrix) * _ONE)
        fixed = fixed.astype(np.int32)
        start = 0
        for shape, (color, thickness, closed) in zip(self._shapes, self._styles, strict=True):
            pts, start = fixed[start : start + len(shape)], start + len(shape)
            if thickness < 0:
                cv2.fillPoly(self.canvas, [pts], color, cv2.LINE_AA, _SHIFT)
            else:
                cv2.polylines(self.canvas, [pts], closed, color, thickness, cv2.LINE_AA, _SHIFT)
        self._shapes.clear()
        self._styles.clear()


def _shade(color: Color, factor: float) -> Color:
    return (color[0] * factor, color[1] * factor, color[2] * factor)


def draw_face(canvas: np.ndarray, matrix: np.ndarray, ident: Identity, geom: FaceGeometry) -> None:
    """Paint ``geom`` onto ``canvas`` (uint8, HxW or HxWx3) in place."""
    p = Painter(canvas, matrix)
    skin, dark = ident.skin, (25.0, 20.0, 30.0)
    # Neck and shoulders first, so the head overlaps them.
    p.fill(np.array([[-0.26, 0.5], [0.26, 0.5], [0.3, 1.3], [-0.3, 1.3]]), _shade(skin, 0.8))
    p.fill(_ellipse(0, 1.55, 1.3, 0.55, 20), ident.clothes)
    if geom.hair_back is not None:
        p.fill(geom.hair_back, ident.hair)
    for ear in geom.ears:
        p.fill(ear, _shade(skin, 0.88))
    p.fill(geom.head, skin)
    if geom.hair_cap is not None:
        p.fill(geom.hair_cap, ident.hair)

    for crease, strength in geom.creases:
        p.line(crease, _shade(skin, 1 - 0.35 * strength), 0.018)
    for eye, iris, pupil, lid in zip(
        geom.eyes, geom.irises, geom.pupils, geom.upper_lids, strict=True
    ):
        p.fill(eye, (225.0, 228.0, 232.0))
        p.fill(iris, ident.iris)
        p.fill(pupil, dark)
        p.line(lid, dark, 0.022)
    for brow in geom.brows:
        p.fill(brow, ident.brow)

    p.line(geom.nose_side, _shade(skin, 0.78), 0.02)
    p.line(geom.nose_base, _shade(skin, 0.7), 0.022)
    for nostril in geom.nostrils:
        p.fill(nostril, _shade(skin, 0.45))

    p.fill(geom.lips, ident.lips)
    if geom.mouth_inner is not None:
        p.fill(geom.mouth_inner, (30.0, 25.0, 60.0))
        if geom.teeth is not None:
            p.fill(geom.teeth, (225.0, 235.0, 240.0))
    p.line(geom.lip_line, _shade(ident.lips, 0.55), 0.018)

    if geom.glasses is not None:
        for part in geom.glasses[:2]:
            p.line(part, dark, 0.025, closed=True)
        p.line(geom.glasses[2], dark, 0.025)
    p.paint()
