"""The bench scripts' helper modules, importable by name as the scripts see them
(``python bench/x.py`` puts ``bench/`` on ``sys.path``). Loaded one by one from their files:
``bench/`` itself on ``sys.path`` would let bench/pipeline.py shadow the ``pipeline`` package."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str) -> None:
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses look their module up
    spec.loader.exec_module(module)


for _name in ("throughput", "gpu", "detectors"):  # gpu imports throughput
    if _name not in sys.modules:
        _load(_name)
