"""Stage ``download``: the raw dataset in ``data/raw``.

- Embedded default (``download.synthetic``): render the synthetic dataset in ``prepare.dataset``'s
  published format (FER+: ``fer2013.csv`` + ``fer2013new.csv`` with crowd votes), so that the
  prepare stage exercises the real reader and the priors come from the synthetic crowd.
- Real datasets: none can be downloaded (licences), so check that ``prepare.source`` holds the
  published layout and record a fingerprint of its key files in ``data/raw/source.json``; for
  FER+ fetch the public vote file (MIT) when ``prepare.votes`` points into ``data/raw``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import mlflow
import pandas as pd

from pipeline import tracking
from pipeline.params import Params
from pipeline.paths import RAW_DIR, report_dir, run_record_path
from pipeline.stages.common import stage_main
from psr.fileio import write_json

STAGE = "download"
SOURCE_RECORD = "source.json"
log = logging.getLogger(__name__)


def generate(params: Params) -> dict[str, int]:
    """Render the synthetic dataset into ``data/raw``; return the image count per split."""
    from psr.data.synthetic import FORMATS, GENERATION_FILE, write_dataset

    fmt = params.prepare.dataset
    if fmt not in FORMATS:
        raise ValueError(
            f"params.yaml: prepare.dataset: the synthetic generator writes {list(FORMATS)}, "
            f"not {fmt!r}"
        )
    write_dataset(
        fmt, RAW_DIR, params.download.synth, progress=False, workers=params.download.workers
    )
    generation = pd.read_csv(RAW_DIR / GENERATION_FILE)
    counts = generation["split"].value_counts() if "split" in generation else pd.Series(dtype=int)
    return {f"images_{split}": int(n) for split, n in counts.items()}


def _fingerprint(path: Path) -> dict[str, object]:
    """Size and modification time of a file, entry count of a folder: cheap change detection."""
    stat = path.stat()
    if path.is_dir():
        return {"path": str(path.resolve()), "entries": sum(1 for _ in path.iterdir())}
    return {"path": str(path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def vote_files_to_fetch(params: Params) -> list[Path]:
    """FER+ vote files the configuration expects inside data/raw (the only public download):
    ``prepare.votes`` of FER+, ``priors.votes_file`` (a prior from the votes) and, when the
    backbone stage runs, ``backbone.votes``."""
    wanted = [params.priors.votes_file]
    if params.prepare.dataset == "ferplus":
        wanted.append(params.prepare.votes)
    if params.backbone.enabled:
        wanted.append(params.backbone.votes)
    raw = RAW_DIR.resolve()
    found = {Path(p) for p in wanted if p is not None and Path(p).resolve().is_relative_to(raw)}
    if params.download.ferplus_votes is not None and not found:
        raise ValueError(
            "params.yaml: download.ferplus_votes is a local copy of the FER+ vote file to put in "
            f"{RAW_DIR}, but none of prepare.votes (FER+), priors.votes_file or backbone.votes "
            "points there"
        )
    return sorted(found)


def check_real_source(params: Params) -> dict[str, int]:
    """Fetch what is public (FER+ votes) and check the user's copy of the dataset."""
    from psr.data.sources import check_source, fetch_ferplus_votes

    cfg = params.prepare
    for votes in vote_files_to_fetch(params):
        fetch_ferplus_votes(votes, local=params.download.ferplus_votes)
    files = check_source(cfg.dataset, cfg.source, cfg.votes, cfg.rafdb_images)
    record = {name: _fingerprint(Path(p)) for name, p in files.items()}
    write_json(RAW_DIR / SOURCE_RECORD, {"dataset": cfg.dataset, "files": record})
    return {"source_files": len(record)}


def run(params: Params) -> None:
    with tracking.stage_run(
        STAGE,
        params.dataset_name,
        params={
            "download": params.download.model_dump(mode="json"),
            "dataset": params.prepare.dataset,
        },
        record=run_record_path(STAGE),
    ):
        if params.download.synthetic:
            from psr.data.synthetic import write_preview

            counts = generate(params)
            preview = report_dir(STAGE) / "preview.png"
            write_preview(preview, params.download.synth)
            mlflow.log_artifact(str(preview))
        else:
            RAW_DIR.mkdir(parents=True, exist_ok=True)
            counts = check_real_source(params)
        mlflow.log_metrics(counts)
        log.info("raw data in %s: %s", RAW_DIR, counts)


main = stage_main(STAGE, run)

if __name__ == "__main__":
    sys.exit(main())
