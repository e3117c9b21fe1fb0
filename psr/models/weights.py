"""Loading external weights into a PSR network: SR nets and the VGG backbone.

Accepted files:

- SR: the official EDSR-PyTorch state dict (e.g. ``edsr_baseline_x2-1bc95232.pt``; its mean-shift
  keys ``sub_mean.*``/``add_mean.*`` are ignored and reported) or the state dict of
  ``build_sr(kind, scale, **cfg)`` written by SR pre-training.
- Backbone: a torchvision ``vgg16_bn`` state dict (``features.<i>.*``; classifier ignored) or a
  PSR checkpoint written by :func:`psr.models.save_model`, whose VGG layers and head are copied:
  a single-branch one (a FER+-trained ``vgg16``, the official RAF-DB start) into every branch, a
  pyramid with as many branches as the model branch by branch; its output layer is reordered
  by class names when both orders are known.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from psr.data.labels import permutation
from psr.models.psr import PSRNet

log = logging.getLogger(__name__)

#: Keys of the official EDSR state dict that have no counterpart here (mean shift removed).
MEAN_SHIFT_PREFIXES: tuple[str, ...] = ("sub_mean.", "add_mean.")
_OUTPUT_LAYER = str(8)  # index of the last Linear in build_head's Sequential


def read_state_dict(path: str | Path, what: str) -> dict:
    """A tensor dict from ``path`` (loaded with ``weights_only=True``); clear errors if not."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and EOF errors all mean "not a readable file"
        raise ValueError(f"{what} file {path} is not a readable torch file: {err}") from err
    if not isinstance(obj, Mapping):
        raise ValueError(f"{what} file {path} holds a {type(obj).__name__}, not a state dict")
    return dict(obj)


def load_sr_state_dict(sr: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    """Load ``state`` into the SR network ``sr``; return the ignored mean-shift keys.

    Any other missing or unexpected key is an error (a wrong scale or size shows here).
    """
    ignored = [k for k in state if k.startswith(MEAN_SHIFT_PREFIXES)]
    kept = {k: v for k, v in state.items() if not k.startswith(MEAN_SHIFT_PREFIXES)}
    try:
        sr.load_state_dict(kept, strict=True)
    except RuntimeError as err:
        raise ValueError(f"SR weights do not fit {type(sr).__name__}: {err}") from err
    if ignored:
        log.info("SR weights: ignored mean-shift keys %s", ignored)
    return ignored


def load_sr_weights(
    model: PSRNet, source: str | Path | Mapping[str, torch.Tensor], scale: int = 2
) -> list[str]:
    """Load SR weights (a file or a state dict) into the model's x``scale`` SR network."""
    state = read_state_dict(source, "SR weights") if isinstance(source, str | Path) else source
    if not any(b.kind == "sr" and b.scale == scale for b in model.branches):
        raise ValueError(f"the model has no x{scale} SR branch (branches: {model.branches})")
    return load_sr_state_dict(model.sr_net(scale), state)


def _features_from_torchvision(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}


def _features_from_psr(state: Mapping[str, torch.Tensor], branch: int) -> dict[str, torch.Tensor]:
    """VGG feature tensors of a PSR state dict: branch ``branch``'s low copy + the high part.

    Slicing an ``nn.Sequential`` keeps the original indices, so ``low.<b>.<i>`` and
    ``high.0.<i>`` are already keyed by the index ``i`` in ``vgg16_bn().features``.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if m := re.fullmatch(rf"(?:low\.{branch}|high\.0)\.(\d+\..+)", key):
            out[m[1]] = value
    return out


def _branch_count(state: Mapping[str, torch.Tensor]) -> int:
    return len({m[1] for key in state if (m := re.match(r"low\.(\d+)\.", key))})


def _load_features(
    model: PSRNet, features: Sequence[Mapping[str, torch.Tensor]], sep_pos: int
) -> None:
    """Load ``features`` (keyed ``<index>.<param>``; one mapping for every branch, or one per
    branch) into the low copies and the high part."""
    if len(features) not in (1, len(model.low)):
        raise ValueError(f"{len(features)} branches of weights for {len(model.low)} branches")
    try:
        for b, low in enumerate(model.low):
            branch = features[b % len(features)]
            low_state = {k: v for k, v in branch.items() if int(k.split(".", 1)[0]) < sep_pos}
            low.load_state_dict(low_state, strict=True)
        high = {k: v for k, v in features[0].items() if int(k.split(".", 1)[0]) >= sep_pos}
        model.high[0].load_state_dict(high, strict=True)
    except RuntimeError as err:
        raise ValueError(f"backbone weights do not fit this model's VGG (width?): {err}") from err


def _load_head(
    model: PSRNet,
    head: dict[str, torch.Tensor],
    source_names: Sequence[str] | None,
    class_names: Sequence[str] | None,
) -> None:
    weight_key, bias_key = f"{_OUTPUT_LAYER}.weight", f"{_OUTPUT_LAYER}.bias"
    if source_names is not None and class_names is not None:
        order = permutation(source_names, class_names)
        head[weight_key] = head[weight_key][order]
        head[bias_key] = head[bias_key][order]
    elif head[weight_key].shape[0] != model.num_classes:
        raise ValueError(
            f"backbone output layer has {head[weight_key].shape[0]} classes, the model "
            f"{model.num_classes}: give pretrained_class_names and class_names to reorder it"
        )
    try:
        model.head.load_state_dict(head, strict=True)
    except RuntimeError as err:
        raise ValueError(f"backbone head does not fit this model's head: {err}") from err


def load_backbone_weights(
    model: PSRNet,
    path: str | Path,
    sep_pos: int,
    *,
    source_class_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
) -> None:
    """Initialise every low copy, the high part and (PSR checkpoints) the head from ``path``."""
    state = read_state_dict(path, "backbone weights")
    if "state_dict" in state and "config" in state:  # a checkpoint from save_model
        source_class_names = source_class_names or state.get("class_names")
        weights = state["state_dict"]
        branches = _branch_count(weights)
        if branches not in (1, len(model.low)):
            raise ValueError(
                f"backbone weights file {path} is a {branches}-branch model; this model has "
                f"{len(model.low)} branches (a single-branch vgg16 fits every pyramid)"
            )
        parts = [_features_from_psr(weights, b) for b in range(branches)]
        _load_features(model, parts, sep_pos)
        head = {k.removeprefix("head."): v for k, v in weights.items() if k.startswith("head.")}
        _load_head(model, head, source_class_names, class_names)
    elif any(k.startswith("features.") for k in state):
        _load_features(model, [_features_from_torchvision(state)], sep_pos)
    else:
        raise ValueError(
            f"backbone weights file {path} is neither a torchvision vgg16_bn state dict "
            "(features.*) nor a PSR checkpoint (psr.models.save_model)"
        )
    log.info("backbone weights loaded from %s", path)
