"""Apply a recipe to ``params.yaml``: ``python -m pipeline.recipe configs/rafdb.yaml``.

A recipe is a partial params.yaml (the paper's settings for one dataset). Its values are written
over params.yaml the way ``dvc exp run -S`` writes them (comments kept, the result validated
before the file changes); then ``dvc exp run -n <name>`` runs the pipeline with it and records the
experiment.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.params import PARAMS_FILE, Params, read_yaml, set_params


def assignments(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``{"train": {"batch_size": 32}}`` -> ``["train.batch_size=32"]`` (values as JSON/YAML)."""
    out = []
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            out += assignments(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={json.dumps(value)}")
    return out


def apply_recipe(recipe: str | Path, params_file: str | Path = PARAMS_FILE) -> Params:
    recipe = Path(recipe)
    if not recipe.is_file():
        raise FileNotFoundError(f"recipe not found: {recipe}")
    overlay = read_yaml(recipe.read_text(encoding="utf-8"))
    if not isinstance(overlay, Mapping):
        raise ValueError(f"{recipe}: expected a mapping of params.yaml sections")
    return set_params(params_file, assignments(overlay))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.recipe", description=__doc__)
    parser.add_argument("recipe", help="a partial params file, e.g. configs/rafdb.yaml")
    parser.add_argument("--params", default=str(PARAMS_FILE), help="the file to update")
    args = parser.parse_args(argv)
    try:
        params = apply_recipe(args.recipe, args.params)
    except (ValueError, FileNotFoundError) as err:
        print(f"recipe: error: {err}", file=sys.stderr)
        return 2
    print(f"{args.params}: applied {args.recipe} (dataset {params.dataset_name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
