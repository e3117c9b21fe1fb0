"""SR pre-training recipes side by side: PSNR and SSIM against bicubic on held-out faces.

Runs the ``sr_pretrain`` job (the same code as the pipeline stage) once per recipe on a prepared
dataset, with the model of ``params.yaml``, and prints a Markdown table (docs/sr_pretrain.md).

    .venv/bin/python bench/sr_recipe.py --data data/prepared/synthetic [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch
import yaml

from psr.jobs import sr_pretrain
from psr.models import ModelConfig

#: name -> changes to params.yaml's sr_pretrain section. The first is the recipe this project
#: used before (3 epochs of 1,000 whole faces in batches of 64: 48 steps).
RECIPES: dict[str, dict] = {
    "before: 48 steps, whole faces, batch 64": {
        "steps": 48,
        "batch_size": 64,
        "patch_size": None,
        "max_images": 1000,
    },
    "500 steps, 32 px patches": {"steps": 500},
    "1000 steps, 32 px patches": {"steps": 1000},
    "2000 steps, whole faces": {"patch_size": None},
    "2000 steps, 32 px patches, lr 1e-3": {"lr": 1e-3},
    "2000 steps, 32 px patches (default)": {},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="data/prepared/synthetic", help="prepared dataset")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    # bench/pipeline.py shadows the pipeline package here: read params.yaml directly
    params = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8"))
    model = ModelConfig(**params["model"])
    base = sr_pretrain.SRPretrainConfig(
        **params["sr_pretrain"] | {"device": "cpu", "enabled": True}
    )
    print("| recipe | steps | PSNR SR (dB) | PSNR bicubic | SSIM SR | SSIM bicubic | CPU s |")
    print("|---|---|---|---|---|---|---|")
    for name, changes in RECIPES.items():
        cfg = sr_pretrain.SRPretrainConfig(**(base.model_dump() | changes))
        with tempfile.TemporaryDirectory() as out:
            start = time.process_time()
            m = sr_pretrain.run(cfg, model, args.data, out).metrics
            seconds = time.process_time() - start
        print(
            f"| {name} | {cfg.steps} | {m['psnr_sr']:.2f} | {m['psnr_bicubic']:.2f} "
            f"| {m['ssim_sr']:.4f} | {m['ssim_bicubic']:.4f} | {seconds:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
