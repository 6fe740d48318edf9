# Generated from ch04_gpt_model/ch04_gpt_model.ipynb by tools/export.py: edit the notebook, not this file.
"""The one place a device is chosen: later chapters call get_device() instead of pasting selection code."""
from __future__ import annotations

import torch


def get_device(preference: str = "auto") -> torch.device:
    """The device to compute on: "auto" picks CUDA, then Apple's MPS, then the CPU; or name one ("cpu", "cuda:1", "mps")."""
    mps_ok = hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if mps_ok else torch.device("cpu")
    try:
        device = torch.device(preference)
    except RuntimeError as err:
        raise ValueError(f"unknown device {preference!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from err
    if (device.type == "cuda" and not torch.cuda.is_available()) or (device.type == "mps" and not mps_ok):
        raise ValueError(f"device {preference!r} is not available on this machine: use 'auto' or 'cpu'")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {preference!r} does not exist: this machine has {torch.cuda.device_count()} "
                         f"CUDA device(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device
