"""Inference speed of the Predictor per runtime: latency per image (p50/p95) for one face crop, one
720p photo with Haar detection and a batch of crops, for a small model and the paper's
configuration (random weights), as a ratio to PyTorch eager and a fraction of the FLOP ceiling.

    .venv/bin/python bench/inference.py [--runs 20] [--batch 32] [--threads N]
        [--models small paper]
        [--runtimes eager eager-fold onnx onnx-nofold onnx-basic onnx-int8]

Runtimes: ``eager`` (PyTorch, the model as trained), ``eager-fold`` (PyTorch with BatchNorm
folded into the convolutions), ``onnx`` (onnxruntime, BatchNorm folded before export, all graph
optimisations: ``Predictor(runtime="onnx")``), ``onnx-nofold`` (the same without folding before
export: onnxruntime's own fusions only), ``onnx-basic`` (folded, basic optimisations only) and
``onnx-int8`` (the folded graph quantised to int8, ``Predictor(runtime="onnx-int8")``, calibrated
on synthetic face crops: with random weights only its speed means anything; ``bench/quantize.py``
measures its accuracy on a trained model).

The runtimes of a case are timed interleaved, call by call, so a load change on a shared machine
hits all of them alike: compare rows of the same run only. The FLOP ceiling is measured in the
same interleaved rounds (a 1024^3 float32 matrix product at the same thread count, so a loaded
machine lowers it too), and so is Haar detection alone, which a photo's model time leaves out.
FLOPs per
image are counted by ``torch.utils.flop_counter.FlopCounterMode`` on the eager model (convs,
matmuls and linears; it leaves out pooling, BatchNorm and the STN's sampling). The ceiling is a
float32 one: int8 arithmetic can pass it.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from collections.abc import Callable

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from psr.data.synthetic.frontal import frontal_face
from psr.detect import HaarDetector
from psr.inference import Predictor
from psr.models import FusedModel, create_model
from psr.models.fusion import fuse_conv_bn
from psr.runtime_onnx import OnnxClassifier

NAMES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt")
CONFIGS = {
    # A CPU-sized member: same pyramid and STN, VGG at 1/4 width, a 4-block EDSR.
    "small": {"image_size": 96, "width": 0.25, "sr_res_blocks": 4, "sr_features": 32},
    # The paper (FER+): full vgg16_bn, EDSR-baseline x2 with 16 blocks of 64 channels, S = 96.
    "paper": {"image_size": 96},
}
RUNTIMES = ("eager", "eager-fold", "onnx", "onnx-nofold", "onnx-basic", "onnx-int8")
#: Faces of several sizes in a crop, as the int8 runtime's calibration images.
CALIBRATION_FACES = tuple(range(40, 96, 4))


def photo(height: int, width: int, face: int) -> np.ndarray:
    """An RGB photo with one face in the middle."""
    canvas = np.full((height, width, 3), (110, 140, 170), np.uint8)
    y, x = (height - face) // 2, (width - face) // 2
    canvas[y : y + face, x : x + face] = frontal_face(face)[:, :, None]
    return canvas


def timed(fns: dict[str, Callable[[], object]], runs: int, warmup: int = 2) -> dict[str, list]:
    """Seconds of ``runs`` calls of every function, interleaved call by call after ``warmup``
    untimed rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


SGEMM = 1024
_A, _B = torch.randn(SGEMM, SGEMM), torch.randn(SGEMM, SGEMM)


def sgemm() -> torch.Tensor:
    """One float32 matrix product of 2 * SGEMM^3 FLOPs: the ceiling's probe."""
    return torch.mm(_A, _B)


def gflop_per_image(model: torch.nn.Module, image_size: int) -> float:
    """FLOPs of one eval forward pass, counted by FlopCounterMode, in GFLOP."""
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        FusedModel(model).eval()(torch.randn(1, 3, image_size, image_size))
    return counter.get_total_flops() / 1e9


def predictors(model, name: str, runtimes, threads: int) -> dict[str, Predictor]:
    """One Predictor of face crops per runtime, over the same weights."""
    size = CONFIGS[name]["image_size"]
    built: dict[str, Predictor] = {}
    folded = fuse_conv_bn(model) if "eager-fold" in runtimes else None
    for runtime in runtimes:
        if runtime == "eager":
            built[runtime] = Predictor(model, NAMES, size)
        elif runtime == "eager-fold":
            built[runtime] = Predictor(folded, NAMES, size)
        elif runtime == "onnx":
            built[runtime] = Predictor(model, NAMES, size, runtime="onnx", threads=threads)
        elif runtime == "onnx-int8":
            faces = [photo(96, 96, face) for face in CALIBRATION_FACES]
            built[runtime] = Predictor(
                model, NAMES, size, runtime=runtime, threads=threads, calibration=faces
            )
        else:  # an ONNX variant: the same Predictor with another session behind it
            predictor = Predictor(model, NAMES, size)
            predictor._onnx = OnnxClassifier.from_model(
                model,
                threads=threads,
                fold_batch_norm=runtime != "onnx-nofold",
                optimization="basic" if runtime == "onnx-basic" else "all",
            )
            built[runtime] = predictor
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="timed calls per latency row")
    parser.add_argument("--batch", type=int, default=32, help="faces per throughput batch")
    parser.add_argument("--threads", type=int, default=0, help="torch/onnxruntime threads")
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    torch.manual_seed(0)
    crop = photo(96, 96, 80)  # a face crop, as with --no-detect
    big = photo(720, 1280, 200)  # a 720p frame with one face
    haar = HaarDetector()
    assert haar.detect(big), "the benchmark face must be detectable"
    print(f"cpu, {threads} threads (torch and onnxruntime), runs {args.runs}")
    header = (
        f"{'model':<6} {'GFLOP':>6} {'runtime':<12} {'case':<24} {'p50 ms':>8} {'p95 ms':>8} "
        f"{'img/s':>7} {'x eager':>8} {'of ceil':>8} {'ceil GFLOP/s':>12}"
    )
    print(header)
    print("-" * len(header))

    for name in args.models:
        model = create_model("psr", num_classes=len(NAMES), **CONFIGS[name]).eval()
        gflop = gflop_per_image(model, CONFIGS[name]["image_size"])
        plain = predictors(model, name, args.runtimes, threads)
        detecting = {r: copy.copy(p) for r, p in plain.items()}  # the same model or session
        for predictor in detecting.values():
            predictor.detector = haar
        for predictor in plain.values():
            predictor.batch_size = args.batch
        assert all(p.predict_arrays([big])[0].status == "ok" for p in detecting.values())
        batch = [crop] * args.batch
        cases = {
            "1 crop": ({r: lambda p=p: p.predict_arrays([crop]) for r, p in plain.items()}, 1),
            "1 photo 720p + Haar": (
                {r: lambda p=p: p.predict_arrays([big]) for r, p in detecting.items()},
                1,
            ),
            f"batch of {args.batch} crops": (
                {r: lambda p=p, b=batch: p.predict_arrays(b) for r, p in plain.items()},
                args.batch,
            ),
        }
        for case, (fns, images) in cases.items():
            runs = args.runs if images == 1 else max(3, args.runs // 4)
            probes = {"haar": lambda: haar.detect(big)} if "Haar" in case else {}
            times = timed({**fns, "sgemm": sgemm, **probes}, runs, warmup=2 if images == 1 else 1)
            ceiling = 2 * SGEMM**3 / np.median(times.pop("sgemm")) / 1e9  # GFLOP/s
            detect_ms = np.median(times.pop("haar")) * 1000 if "Haar" in case else 0.0
            eager = np.median(times["eager"]) if "eager" in times else float("nan")
            for runtime, seconds in times.items():
                per_image = np.array(seconds) / images
                p50, p95 = np.percentile(per_image, [50, 95]) * 1000
                ratio = eager / np.median(seconds)
                model_ms = p50 - detect_ms
                share = gflop / (model_ms / 1000) / ceiling if model_ms > 0 else float("nan")
                print(
                    f"{name:<6} {gflop:>6.2f} {runtime:<12} {case:<24} {p50:>8.1f} {p95:>8.1f} "
                    f"{1000 / p50:>7.1f} {ratio:>7.2f}x {share:>8.1%} {ceiling:>12.0f}"
                )
            if detect_ms:
                print(f"{name:<6} {'':>6} {'Haar alone':<12} {case:<24} {detect_ms:>8.1f}")
        single = {r: lambda p=p: p.predict_arrays([crop]) for r, p in plain.items()}
        whole = {f"{r} batch": lambda p=p, b=batch: p.predict_arrays(b) for r, p in plain.items()}
        times = timed({**single, **whole}, max(3, args.runs // 4), warmup=1)
        for runtime in plain:
            one = np.median(times[runtime])
            per = np.median(times[f"{runtime} batch"]) / args.batch
            print(
                f"{name:<6} batch {args.batch} vs 1 crop, {runtime:<12} interleaved: "
                f"{per * 1000:.1f} vs {one * 1000:.1f} ms per image ({one / per:.2f}x)"
            )
    print(
        "x eager: eager p50 / this p50 in the same case. of ceil: GFLOP per image / model time "
        "per image / ceiling (the matmul rate in the same rounds); a photo's model time is its "
        "p50 less Haar detection alone in the same rounds."
    )


if __name__ == "__main__":
    main()
