"""Face tracks across the sampled frames of a video, and per-track smoothing of probabilities.

:class:`IoUTracker` links each frame's boxes to the tracks of the frames before it by greedy
matching on box overlap (IoU, largest first); a box that overlaps no live track starts a new
track id. A track missed for more than ``patience`` sampled frames ends. :func:`track_faces` runs
one tracker per video over :meth:`psr.inference.Predictor.predict_frames` results, fills each
record's ``track`` and, with ``smooth``, replaces its probabilities by an exponential moving
average over its track (the expression and probability follow the smoothed values).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from psr.inference import FaceRecord, FrameResult

Box = tuple[int, int, int, int]  # x, y, w, h


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes (0 when they do not overlap)."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    across = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    down = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = across * down
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


@dataclasses.dataclass
class _Track:
    box: Box
    missed: int = 0


class IoUTracker:
    """Greedy IoU tracker over the frames of one video, fed in order with :meth:`update`."""

    def __init__(self, threshold: float = 0.3, patience: int = 2):
        if not 0 < threshold <= 1:
            raise ValueError(f"IoU threshold must be in (0, 1], got {threshold}")
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        self.threshold = threshold
        self.patience = patience
        self._tracks: dict[int, _Track] = {}
        self._next_id = 0

    def update(self, boxes: Sequence[Box]) -> list[int]:
        """Track ids of one frame's ``boxes``, in their order."""
        pairs = sorted(
            (
                (overlap, track_id, i)
                for track_id, track in self._tracks.items()
                for i, box in enumerate(boxes)
                if (overlap := iou(track.box, box)) >= self.threshold
            ),
            reverse=True,
        )
        ids: list[int | None] = [None] * len(boxes)
        taken: set[int] = set()
        for _, track_id, i in pairs:
            if ids[i] is None and track_id not in taken:
                ids[i] = track_id
                taken.add(track_id)
        for track_id in list(self._tracks):
            if track_id not in taken:
                self._tracks[track_id].missed += 1
                if self._tracks[track_id].missed > self.patience:
                    del self._tracks[track_id]
        for i, box in enumerate(boxes):
            if ids[i] is None:
                ids[i] = self._next_id
                self._next_id += 1
            self._tracks[ids[i]] = _Track(tuple(box))
        return [int(i) for i in ids]  # type: ignore[arg-type]


def _smoothed(record: FaceRecord, previous: np.ndarray | None, alpha: float) -> np.ndarray:
    current = np.array(list(record.probabilities.values()), dtype=np.float64)
    return current if previous is None else alpha * current + (1 - alpha) * previous


def track_faces(
    results: Iterable[FrameResult],
    *,
    threshold: float = 0.3,
    patience: int = 2,
    smooth: float | None = None,
) -> Iterator[FrameResult]:
    """``results`` with a ``track`` id on every face of a video frame (a new tracker per video;
    still images keep ``track=None``). ``smooth=ALPHA`` in (0, 1] averages each track's
    probabilities exponentially: ``p = ALPHA * p_frame + (1 - ALPHA) * p_previous``."""
    if smooth is not None and not 0 < smooth <= 1:
        raise ValueError(f"smooth must be in (0, 1], got {smooth}")
    tracker: IoUTracker | None = None
    source: str | None = None
    averages: dict[int, np.ndarray] = {}
    for result in results:
        frame = result.frame
        if frame is None or frame.index is None:
            yield result
            continue
        if frame.source != source:
            source, averages = frame.source, {}
            tracker = IoUTracker(threshold, patience)
        faces = [r for r in result.records if r.status == "ok" and r.box is not None]
        ids = iter(tracker.update([r.box for r in faces]))
        records = []
        for record in result.records:
            if record.status != "ok" or record.box is None:
                records.append(record)
                continue
            track = next(ids)
            record = dataclasses.replace(record, track=track)
            if smooth is not None:
                probs = averages[track] = _smoothed(record, averages.get(track), smooth)
                top = int(probs.argmax())
                names = list(record.probabilities)
                record = dataclasses.replace(
                    record,
                    expression=names[top],
                    probability=float(probs[top]),
                    probabilities={n: float(p) for n, p in zip(names, probs, strict=True)},
                )
            records.append(record)
        yield FrameResult(frame, records)
