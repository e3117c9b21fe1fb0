"""``psr predict``: facial expressions in images, folders and videos."""

from __future__ import annotations

import argparse
from pathlib import Path

from psr.commands import _calibration as calibration

HELP = "predict expressions in images, folders (recursively) and videos"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image, video or folder")
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", help="inference checkpoint (best.pt)")
    model.add_argument("--model-uri", help="MLflow model URI, e.g. models:/psr-fer@champion")
    parser.add_argument(
        "--tracking-uri",
        help="MLflow store that --model-uri is read from, e.g. sqlite:////path/to/repo/mlflow.db "
        "(default: MLFLOW_TRACKING_URI, else mlflow.db in the working directory)",
    )
    parser.add_argument(
        "--no-detect", action="store_true", help="inputs are face crops: skip face detection"
    )
    parser.add_argument(
        "--detector",
        choices=("auto", "mtcnn", "haar", "yunet"),
        default="auto",
        help="auto (default): yunet with --yunet-model, else mtcnn when its files load, else haar",
    )
    parser.add_argument("--yunet-model", help="YuNet ONNX file (face_detection_yunet_2023mar.onnx)")
    parser.add_argument(
        "--no-align",
        action="store_true",
        help="crop detector boxes as they are instead of aligning faces by their landmarks",
    )
    parser.add_argument(
        "--margin", type=float, default=0.2, help="crop margin around faces that are not aligned"
    )
    parser.add_argument("--max-side", type=int, default=1024, help="downscale to this to detect")
    parser.add_argument("--every", type=int, default=30, help="use every Nth video frame")
    parser.add_argument("--csv", help="write one row per face to this CSV file")
    parser.add_argument("--json", help="write the records to this JSON file")
    parser.add_argument("--annotate", help="write copies with boxes and labels into this folder")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--runtime",
        choices=("torch", "onnx", "onnx-int8"),
        default="torch",
        help="onnx: export once in memory and classify through onnxruntime (CPU); onnx-int8: "
        "the same quantised to int8, calibrated on --calibrate-on (CPU, fastest)",
    )
    calibration.add_arguments(parser, "--runtime onnx-int8")
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads for torch/onnxruntime (0: default)"
    )
    parser.add_argument(
        "--smooth",
        type=float,
        metavar="ALPHA",
        help="video: average each face track's probabilities, p = ALPHA * frame + "
        "(1 - ALPHA) * previous (0 < ALPHA <= 1)",
    )


def annotated_path(out_dir: Path, source: str, frame: int | None, roots: list[Path]) -> Path:
    """Where the annotated copy of ``source`` goes: mirrored under ``out_dir`` relative to the
    folder argument it came from (or just its name); video frames get ``_f<index>`` names."""
    import cv2

    path = Path(source)
    relative = Path(path.name)
    for root in roots:
        if root.is_dir() and path.is_relative_to(root):
            relative = Path(root.name) / path.relative_to(root)
            break
    if frame is not None:
        relative = relative.with_name(f"{relative.stem}_f{frame:06d}.jpg")
    elif not cv2.haveImageWriter(str(relative)):
        relative = relative.with_suffix(relative.suffix + ".png")
    return out_dir / relative


SYNTHETIC_WARNING = (
    "warning: {model} was trained on the project's synthetic cartoon faces (dataset {dataset!r}, "
    "the embedded default), not on photos of people: on a real photo its expressions mean "
    "little (a smiling person can come out as anger). For real photos train on FER+, RAF-DB or "
    "AffectNet: configs/ferplus.yaml, configs/rafdb.yaml, configs/affectnet8.yaml (README, "
    '"The paper\'s recipes").'
)


def training_data_warning(model_uri: str, metadata: dict) -> str | None:
    """The warning for a logged model whose MLmodel metadata (written by the register stage)
    says it was trained on the synthetic data; None otherwise."""
    from psr.serving import DATASET_METADATA, SYNTHETIC_METADATA

    if not metadata.get(SYNTHETIC_METADATA):
        return None
    return SYNTHETIC_WARNING.format(model=model_uri, dataset=metadata.get(DATASET_METADATA, "?"))


def _print_table(records: list) -> None:
    print(f"{'file':<40} {'frame':>6} {'box (x,y,w,h)':<22} {'expression':<12} {'prob':>6}")
    for r in records:
        frame = "" if r.frame is None else str(r.frame)
        if r.status == "ok":
            box = ",".join(map(str, r.box))
            print(f"{r.source:<40} {frame:>6} {box:<22} {r.expression:<12} {r.probability:>6.3f}")
        else:
            message = r.message.removeprefix(f"{r.source}: ")
            print(f"{r.source:<40} {frame:>6} {r.status}: {message}")


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from dataclasses import asdict

    import cv2
    import pandas as pd

    from psr.device import resolve_device
    from psr.face_tracks import track_faces
    from psr.fileio import atomic_write
    from psr.inference import Predictor, annotate, iter_frames

    if args.every < 1:
        raise ValueError(f"--every must be >= 1, got {args.every}")
    if args.smooth is not None and not 0 < args.smooth <= 1:
        raise ValueError(f"--smooth must be in (0, 1], got {args.smooth}")
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    # onnxruntime runs on the CPU here: "auto" must not pick a GPU the session cannot use
    device = "cpu" if args.runtime != "torch" and args.device == "auto" else args.device
    options = {
        "detect": not args.no_detect,
        "detector": args.detector,
        "yunet_model": args.yunet_model,
        "max_side": args.max_side,
        "margin": args.margin,
        "align": not args.no_align,
        "device": resolve_device(device),
        "batch_size": args.batch_size,
        "runtime": args.runtime,
        "threads": args.threads,
    }
    crops = calibration.crops(args, args.runtime == "onnx-int8", "--runtime onnx-int8")
    if crops is not None:
        options["calibration"] = crops
    if args.checkpoint:
        if args.tracking_uri:
            raise ValueError("--tracking-uri goes with --model-uri, not --checkpoint")
        predictor = Predictor.from_checkpoint(args.checkpoint, **options)
    else:
        predictor = Predictor.from_uri(args.model_uri, tracking_uri=args.tracking_uri, **options)
    warning = args.model_uri and training_data_warning(args.model_uri, predictor.metadata)
    roots = [Path(p) for p in args.paths]
    out_dir = Path(args.annotate) if args.annotate else None
    records = []
    results = predictor.predict_frames(iter_frames(args.paths, args.every))
    for result in track_faces(results, smooth=args.smooth):
        records.extend(result.records)
        if out_dir is not None and result.frame is not None:
            frame = result.frame
            target = annotated_path(out_dir, frame.source, frame.index, roots)
            drawn = cv2.cvtColor(annotate(frame.image, result.records), cv2.COLOR_RGB2BGR)
            ok, encoded = cv2.imencode(target.suffix, drawn)
            if not ok:
                raise ValueError(f"{target}: OpenCV cannot encode this image format")
            atomic_write(target, encoded.tobytes())
    if not records:
        raise ValueError(f"no files found in {', '.join(args.paths)}")
    names = predictor.class_names
    if args.csv:
        table = pd.DataFrame([r.as_row(names) for r in records])
        table = table.astype(
            {c: "Int64" for c in ("frame", "track", "x", "y", "w", "h")}
        )  # blanks stay
        atomic_write(Path(args.csv), table.to_csv(index=False).encode())
    if args.json:
        text = json.dumps([asdict(r) for r in records], indent=2)
        atomic_write(Path(args.json), text.encode())
    _print_table(records)  # after the files: a closed pipe (`| head`) must not lose them
    faces = sum(r.status == "ok" for r in records)
    no_face = sum(r.status == "no_face" for r in records)
    errors = sum(r.status == "error" for r in records)
    print(f"{faces} face(s); {no_face} frame(s) without a face; {errors} unreadable input(s)")
    if warning:  # last, where it is read
        print(warning, file=sys.stderr)
    return 1 if errors == len(records) else 0
