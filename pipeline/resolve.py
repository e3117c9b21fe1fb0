"""params.yaml + what earlier stages wrote -> the configuration a stage runs.

``tune.space`` and the tuned values address knobs by dotted path (``train.phase1.lrs.1``,
``model.sr_res_blocks``); :func:`apply_overrides` writes such values into the ``train`` and
``model`` sections and re-validates them, so a tuned value obeys the same rules as params.yaml.
:func:`with_pretrained_weights` points the model at the sr_pretrain and backbone stages'
weights, and :func:`for_training` adds the tune stage's best values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from pipeline.params import Params, format_errors
from pipeline.paths import BACKBONE_INFO_FILE, SR_INFO_FILE, TUNE_BEST_FILE
from psr.fileio import read_json


def _set_path(tree: dict[str, Any], path: str, value: Any) -> None:
    """Set ``tree[a][b][i] = value`` for ``path = "a.b.i"`` (integers index lists and tuples)."""
    keys = path.split(".")
    node: Any = tree
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        where = ".".join(keys[: depth + 1])
        if isinstance(node, dict):
            if key not in node:
                raise ValueError(f"{path}: no parameter {where!r}")
            if last:
                node[key] = value
            else:
                node[key] = list(node[key]) if isinstance(node[key], tuple) else node[key]
                node = node[key]
        elif isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise ValueError(f"{path}: {where!r} is not an index of a {len(node)}-item list")
            if last:
                node[int(key)] = value
            else:
                node = node[int(key)]
        else:
            raise ValueError(f"{path}: {'.'.join(keys[:depth])!r} is not a section or a list")


def value_at(params: Params, path: str) -> Any:
    """The value of the dotted ``path`` (``train.phase1.lrs.1``) in params.yaml's sections."""
    node: Any = {"train": params.train.model_dump(), "model": params.model.model_dump()}
    for key in path.split("."):
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list | tuple) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            raise ValueError(f"{path}: no parameter {key!r}")
    return node


def apply_overrides(params: Params, overrides: Mapping[str, Any]) -> Params:
    """A copy of ``params`` with dotted-path values written into ``train``/``model``, validated."""
    sections = {
        "train": params.train.model_dump(mode="python"),
        "model": params.model.model_dump(mode="python"),
    }
    for path, value in overrides.items():
        if not path.startswith(("train.", "model.")):
            raise ValueError(f"{path}: tuned paths start with 'train.' or 'model.'")
        _set_path(sections, path, value)
    validated = {}
    for name, values in sections.items():
        try:
            validated[name] = type(getattr(params, name)).model_validate(values)
        except ValidationError as err:
            raise ValueError(format_errors(err, "tuned parameters", f"{name}.")) from None
    return params.model_copy(update=validated)


def check_space(params: Params) -> None:
    """Each ``tune.space`` path must address a real knob: try its low value (or first choice)."""
    probe = {}
    for path, dim in params.tune.space.items():
        value = dim.choices[0] if dim.type == "categorical" else dim.low
        probe[path] = int(value) if dim.type == "int" else value
    try:
        apply_overrides(params, probe)
    except ValueError as err:
        raise ValueError(f"params.yaml: tune.space: {err}") from None


def with_pretrained_weights(params: Params) -> Params:
    """Point ``model.sr_weights`` at the sr_pretrain output (unless params.yaml names a file)
    and, when the backbone stage ran, ``model.pretrained`` at its checkpoint (it started from
    ``model.pretrained`` itself)."""
    changes: dict[str, str] = {}
    if params.model.sr_weights is None and (weights := read_json(SR_INFO_FILE).get("weights")):
        changes["sr_weights"] = str(weights)
    if params.backbone.enabled:
        checkpoint = read_json(BACKBONE_INFO_FILE).get("checkpoint")
        if not checkpoint:
            raise ValueError(
                f"backbone.enabled but {BACKBONE_INFO_FILE} names no checkpoint: run the "
                "backbone stage first (dvc repro backbone)"
            )
        changes["pretrained"] = str(checkpoint)
    if not changes:
        return params
    return params.model_copy(update={"model": params.model.model_copy(update=changes)})


def for_training(params: Params) -> tuple[Params, dict[str, Any]]:
    """What the train stage trains: params.yaml, the SR weights and the tuned values over them;
    and the tuned values alone (empty when tuning is disabled)."""
    tuned = read_json(TUNE_BEST_FILE).get("params") or {}
    return apply_overrides(with_pretrained_weights(params), tuned), tuned
