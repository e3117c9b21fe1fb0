"""Where the raw datasets come from: check a user-configured path and say exactly what is
missing, where to get it and where to put it; fetch the FER+ vote file (MIT licence).

None of the image datasets can be downloaded automatically (Kaggle account, authors' request or
licence agreement); only microsoft/FERPlus's ``fer2013new.csv`` is public.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from pathlib import Path

from psr.data.ferplus import read_votes
from psr.data.rafdb import find_root
from psr.fileio import atomic_write

DATASETS: tuple[str, ...] = ("ferplus", "rafdb", "affectnet", "affectnet_compact", "folder")
FERPLUS_VOTES_URL = "https://raw.githubusercontent.com/microsoft/FERPlus/master/fer2013new.csv"
FERPLUS_ROWS = 35_887

WHERE_TO_GET = {
    "fer2013": (
        "FER2013 comes from Kaggle and needs an account: download fer2013.csv from"
        " https://www.kaggle.com/c/challenges-in-representation-learning-facial-expression-recognition-challenge/data"
        " (or icml_face_data.csv from the same page)"
    ),
    "ferplus": (
        "the FER+ votes are fer2013new.csv from https://github.com/microsoft/FERPlus (MIT);"
        " `psr.data.sources.fetch_ferplus_votes` downloads or copies it"
    ),
    "rafdb": (
        "RAF-DB is released by its authors for research use on request"
        " (http://www.whdeng.cn/RAF/model1.html); unpack its basic/ folder"
    ),
    "affectnet": (
        "AffectNet is released under a licence agreement (http://mohammadmahoor.com/affectnet/);"
        " unpack the release"
    ),
    "folder": "an image folder is your own data, laid out as <root>/<split>/<class>/*.png",
}


def check_source(
    dataset: str, path: str | Path, votes: str | Path | None = None, images: str = "aligned"
) -> dict[str, Path]:
    """Check that ``path`` holds ``dataset`` in its published layout; return its key files.

    Raises FileNotFoundError that names each missing file, where to get it and where to put it.
    ``votes`` overrides the FER+ vote file location; ``images`` picks RAF-DB's aligned or
    original set.
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    root = Path(path)
    if dataset == "ferplus":
        return _check_ferplus(root, votes)
    if dataset == "rafdb":
        root = find_root(root)
        need = {
            "labels": root / "EmoLabel" / "list_patition_label.txt",
            "images": root / "Image" / images,
        }
        return _require(need, "rafdb", f"so that {root} is the basic/ folder")
    if dataset == "affectnet":
        lists = root / "Manually_Annotated_file_lists"
        need = {
            "training": lists / "training.csv",
            "validation": lists / "validation.csv",
            "images": root / "Manually_Annotated_Images",
        }
        return _require(need, "affectnet", f"so that {root} holds Manually_Annotated_*")
    if dataset == "affectnet_compact":
        need = {
            f"{folder}/{part}": root / folder / part
            for folder in ("train_set", "val_set")
            for part in ("images", "annotations")
        }
        return _require(
            need, "affectnet", f"(the compact release) so that {root} holds train_set/ and val_set/"
        )
    return _require({"train": root / "train"}, "folder", f"with {root} as <root>")


def fetch_ferplus_votes(
    dest: str | Path,
    local: str | Path | None = None,
    url: str = FERPLUS_VOTES_URL,
    timeout: float = 30.0,
) -> Path:
    """Put a validated ``fer2013new.csv`` at ``dest`` (a file, or a folder to hold it).

    Copies ``local`` when given (offline machines), else downloads ``url``. The file is checked
    (exact header, well-formed rows; a download must have all 35,887 rows) before it is moved
    into place, so ``dest`` is never a partial file.
    """
    dest = Path(dest)
    if dest.is_dir() or not dest.suffix:
        dest = dest / "fer2013new.csv"

    def write(out) -> None:
        if local is None:
            _download(url, out, timeout)
            return
        if not Path(local).is_file():
            raise FileNotFoundError(f"FER+ vote file not found: {local}")
        with open(local, "rb") as f:
            shutil.copyfileobj(f, out)

    def check(tmp: Path) -> None:
        table = read_votes(tmp)
        if local is None and len(table) != FERPLUS_ROWS:
            raise ValueError(f"{url}: {len(table)} rows, expected {FERPLUS_ROWS}")

    atomic_write(dest, write, verify=check)
    return dest


def _download(url: str, out, timeout: float) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, out)
    except (urllib.error.URLError, OSError) as err:
        raise ConnectionError(
            f"could not download {url} ({err}). Offline? Copy fer2013new.csv from a clone of"
            " https://github.com/microsoft/FERPlus and pass it as `local` (psr prepare --votes)"
        ) from None


def _check_ferplus(root: Path, votes: str | Path | None) -> dict[str, Path]:
    pixels = [root / "fer2013.csv", root / "icml_face_data.csv"]
    if root.is_file():
        pixels = [root]
        root = root.parent
    vote_file = Path(votes) if votes is not None else root / "fer2013new.csv"
    problems = []
    found = next((p for p in pixels if p.is_file()), None)
    if found is None:
        problems.append(
            f"missing {pixels[0]}: {WHERE_TO_GET['fer2013']}, and put it at {pixels[0]}"
        )
    if not vote_file.is_file():
        problems.append(
            f"missing {vote_file}: {WHERE_TO_GET['ferplus']}, and put it at {vote_file}"
        )
    if problems:
        raise FileNotFoundError("FER+ source incomplete:\n  " + "\n  ".join(problems))
    return {"pixels": found, "votes": vote_file}  # type: ignore[dict-item]


def _require(need: dict[str, Path], origin: str, layout: str) -> dict[str, Path]:
    missing = [str(p) for p in need.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"{origin} source incomplete: missing {', '.join(missing)}."
            f" {WHERE_TO_GET[origin]} {layout}."
        )
    return need
