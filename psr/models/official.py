"""Weights of the authors' code: a ``PyramidShare`` state dict (fastai v1 ``final.w``, or a
``learn.save`` file ``{"model": ..., "opt": ...}``) renamed to this project's PSR keys.

The official module layout (thanhhungqb/pyramid-super-resolution ``psr/pyramid_sr.py``, STN and
EDSR from outside_collection v1.0.0), for ``multiples=[1, 2, 1]`` and ``sep_pos``:

============================== ==============================
official                       here
============================== ==============================
``stn.localization.<i>``       ``stn.localisation.<i>``
``stn.fc_loc.0`` / ``.2``      ``stn.regressor.1`` / ``.3``
``pyramid_group.0.<i>``        ``low.0.<i>`` (the S/2 branch)
``pyramid_group.1.0.*``        ``sr.*`` (EDSR, same names)
``pyramid_group.1.1.<i>``      ``low.1.<i>`` (the SR branch)
``pyramid_group.2.<i>``        ``low.2.<i>`` (the full branch)
``classifier.0.<j>``           ``high.0.<sep_pos + j>``
``classifier.1.0.<k>``         ``head.<k>`` (fastai's head)
============================== ==============================

The head's concat pooling is [max, avg] in both, so the first BatchNorm and Linear carry over.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch

from psr.models.weights import read_state_dict

_FIXED = (
    (r"stn\.localization\.(\d+)\.(.+)", "stn.localisation.{0}.{1}"),
    (r"stn\.fc_loc\.0\.(.+)", "stn.regressor.1.{0}"),
    (r"stn\.fc_loc\.2\.(.+)", "stn.regressor.3.{0}"),
    (r"pyramid_group\.0\.(\d+\..+)", "low.0.{0}"),
    (r"pyramid_group\.1\.0\.(.+)", "sr.{0}"),
    (r"pyramid_group\.1\.1\.(\d+\..+)", "low.1.{0}"),
    (r"pyramid_group\.2\.(\d+\..+)", "low.2.{0}"),
    (r"classifier\.1\.0\.(\d+\..+)", "head.{0}"),
)


def convert_official_state_dict(
    state: Mapping[str, torch.Tensor], sep_pos: int = 24
) -> dict[str, torch.Tensor]:
    """An official ``PyramidShare`` state dict (``multiples=[1, 2, 1]``) in this project's keys;
    a key that fits no rule is an error naming it."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        if m := re.fullmatch(r"classifier\.0\.(\d+)\.(.+)", key):
            out[f"high.0.{sep_pos + int(m[1])}.{m[2]}"] = value
            continue
        for pattern, target in _FIXED:
            if m := re.fullmatch(pattern, key):
                out[target.format(*m.groups())] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"not an official PyramidShare [1, 2, 1] state dict: no rule for {unknown[:5]}"
            f"{' ...' if len(unknown) > 5 else ''}"
        )
    return out


def read_official_weights(path: str | Path, sep_pos: int = 24) -> dict[str, torch.Tensor]:
    """:func:`convert_official_state_dict` of the file at ``path`` (``final.w`` or a fastai
    ``learn.save`` file); load it with ``model.load_state_dict(..., strict=True)``."""
    state = read_state_dict(path, "official PSR weights")
    if set(state) == {"model", "opt"}:  # fastai v1 Learner.save with the optimiser
        state = state["model"]
    return convert_official_state_dict(state, sep_pos)
