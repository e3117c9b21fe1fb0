"""Face detectors side by side: recall, box IoU, landmark error and time per image.

    .venv/bin/python bench/detectors.py [--n 200] [--yunet-model FILE] [--markdown FILE]

Two kinds of labelled faces:
- synthetic photos of the project's generator (``PhotoView``), which knows each face's box and
  its 68 landmarks: ``clean`` (upright, no clutter, occluders, blur or noise) and ``default``
  (the generator's default nuisances: tilt up to +-15 degrees, clutter, occluders, glasses, blur,
  noise, lighting). The generator's box is the whole face square (-1..1 in face units); MTCNN
  and YuNet draw tighter boxes (brows to chin), so their IoU tops out near 0.6 by convention.
- real photos listed in ``bench/detector_faces.json`` (boxes labelled by hand; two photos with no
  face count false detections).

A face counts as found when a detection overlaps it with IoU >= ``--iou`` (greedy matching, best
score first); other detections are false positives. Landmark error: mean distance of the five
points to the generator's, over the inter-ocular distance. Times: median per image, one process.
"""

from __future__ import annotations

import argparse
import json
import os
import site
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from psr.align import five_from_ibug68
from psr.data.decode import read_image
from psr.data.synthetic.config import NuisanceConfig, SynthConfig
from psr.data.synthetic.generator import PhotoView, generate_samples
from psr.detect import Box, FaceDetector, HaarDetector, YuNetDetector
from psr.detect_mtcnn import MTCNNDetector
from psr.face_tracks import iou

REAL_FACES = Path(__file__).with_name("detector_faces.json")


@dataclass
class Labelled:
    """One image with its true face boxes (and, for synthetic faces, their five landmarks)."""

    name: str
    image: np.ndarray  # RGB
    boxes: list[tuple[int, int, int, int]]
    landmarks: list[np.ndarray] = field(default_factory=list)


@dataclass
class Score:
    faces: int = 0
    found: int = 0
    false_positives: int = 0
    ious: list[float] = field(default_factory=list)
    landmark_errors: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def row(self) -> dict[str, float | int | None]:
        return {
            "faces": self.faces,
            "recall": self.found / self.faces if self.faces else None,
            "mean_iou": float(np.mean(self.ious)) if self.ious else None,
            "false_positives": self.false_positives,
            "landmark_error": float(np.mean(self.landmark_errors))
            if self.landmark_errors
            else None,
            "ms_per_image": 1000 * float(np.median(self.seconds)),
        }


def match(found: list[Box], truth: list[tuple[int, int, int, int]], threshold: float) -> list[int]:
    """For each true box, the index of its detection (-1: missed); each detection used once,
    best score first."""
    owner = [-1] * len(truth)
    for k in sorted(range(len(found)), key=lambda i: -found[i].score):
        ious = [iou(found[k].as_tuple(), t) if owner[j] < 0 else -1.0 for j, t in enumerate(truth)]
        if ious and max(ious) >= threshold:
            owner[int(np.argmax(ious))] = k
    return owner


def score(detector: FaceDetector, images: list[Labelled], threshold: float) -> Score:
    result = Score()
    detector.detect(images[0].image)  # warm-up: first-call allocations are not per-image cost
    for item in images:
        start = time.perf_counter()
        found = detector.detect(item.image)
        result.seconds.append(time.perf_counter() - start)
        owner = match(found, item.boxes, threshold)
        result.faces += len(item.boxes)
        result.found += sum(k >= 0 for k in owner)
        result.false_positives += len(found) - sum(k >= 0 for k in owner)
        for j, k in enumerate(owner):
            if k < 0:
                continue
            result.ious.append(iou(found[k].as_tuple(), item.boxes[j]))
            if item.landmarks and found[k].landmarks is not None:
                truth = item.landmarks[j]
                eyes = np.linalg.norm(truth[1] - truth[0])
                error = np.linalg.norm(np.array(found[k].landmarks) - truth, axis=1).mean()
                result.landmark_errors.append(float(error / eyes))
    return result


def synthetic_photos(n: int, clean: bool, seed: int = 0) -> list[Labelled]:
    nuisance = NuisanceConfig()
    if clean:
        nuisance = NuisanceConfig(
            rotation_deg=0, clutter=0, occlusion_rate=0, glasses_rate=0, blur_rate=0, noise_rate=0
        ).model_copy(update={"lighting": 0})
    cfg = SynthConfig(seed=seed, test=n, face_size=(40.0, 200.0), nuisance=nuisance)
    return [
        Labelled(
            f"test/{i}",
            cv2.cvtColor(s.image, cv2.COLOR_BGR2RGB),
            [s.face_box],
            [five_from_ibug68(s.landmarks)],
        )
        for i, s in enumerate(generate_samples(cfg, "test", PhotoView(), allow_not_a_face=False))
    ]


def real_photos(listing: Path = REAL_FACES) -> list[Labelled]:
    """The labelled photos whose files exist (they ship with matplotlib and scikit-learn)."""
    roots = [Path(p) for p in site.getsitepackages()]
    out = []
    for entry in json.loads(listing.read_text())["images"]:
        path = next((r / entry["path"] for r in roots if (r / entry["path"]).is_file()), None)
        if path is None:
            print(f"skipped (not installed): {entry['path']}")
            continue
        out.append(Labelled(path.name, read_image(path), [tuple(b) for b in entry["faces"]]))
    return out


def markdown(rows: list[dict]) -> str:
    def fmt(value, pattern: str) -> str:
        return "–" if value is None else format(value, pattern)

    lines = [
        "| faces | detector | recall | mean IoU | false detections | landmark error | ms / image |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['set']} ({r['faces']}) | {r['detector']} | {fmt(r['recall'], '.3f')} "
            f"| {fmt(r['mean_iou'], '.3f')} | {r['false_positives']} "
            f"| {fmt(r['landmark_error'], '.3f')} | {r['ms_per_image']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="synthetic photos per set")
    parser.add_argument("--iou", type=float, default=0.3, help="IoU that counts as found")
    parser.add_argument("--yunet-model", help="YuNet ONNX file, to add it to the comparison")
    parser.add_argument("--threads", type=int, default=1, help="OpenCV / onnxruntime threads")
    parser.add_argument("--markdown", help="also write the table to this file")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    if args.n < 1:
        raise SystemExit(f"--n must be >= 1, got {args.n}")
    cv2.setNumThreads(args.threads)
    detectors: dict[str, FaceDetector] = {
        "haar": HaarDetector(),
        "mtcnn": MTCNNDetector(threads=args.threads),
    }
    if args.yunet_model:
        detectors["yunet"] = YuNetDetector(args.yunet_model)
    sets = {
        "synthetic, clean": synthetic_photos(args.n, clean=True),
        "synthetic, default nuisances": synthetic_photos(args.n, clean=False),
        "real photos": real_photos(),
    }
    rows = []
    for set_name, images in sets.items():
        for name, detector in detectors.items():
            row = {"set": set_name, "detector": name, **score(detector, images, args.iou).row()}
            rows.append(row)
            print(json.dumps(row))
    table = markdown(rows)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    main()
