"""The one rule for turning a device name into a ``torch.device``."""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when torch sees it, else the CPU; ``cpu``, ``cuda``, ``cuda:1`` as torch
    parses them. Asking for CUDA without it, or an unknown name, is an error that says so."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r}: {err}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but torch sees no CUDA device (use 'auto' or 'cpu')")
    return device
