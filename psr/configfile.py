"""A typed config from an optional YAML file plus command-line overrides (the ``psr`` doors)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

Config = TypeVar("Config", bound=BaseModel)


def read_yaml(path: str | Path | None) -> dict[str, Any]:
    """The mapping in a YAML file (empty without a file); anything else names the file."""
    import yaml

    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"config file not found: {file}")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{file}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file}: expected a mapping of fields, got {type(data).__name__}")
    return data


def load_config(
    cls: type[Config],
    path: str | Path | None,
    what: str,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """``cls`` from the YAML at ``path`` with dotted ``overrides`` (``"phase1.epochs": 3``)
    written over it; ``None`` values are not overrides. Errors name ``what`` and the file."""
    data = read_yaml(path)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return cls(**data)
    except ValidationError as err:
        raise ValueError(f"{what} config {path or '(defaults)'}: {err}") from None
