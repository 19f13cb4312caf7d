"""Choosing the torch device from --device."""

from __future__ import annotations

import torch

from .errors import DigitscanError


class DeviceError(DigitscanError):
    """A --device value that names no usable device."""


def pick_device(spec: str = "auto") -> torch.device:
    """'auto' is the first CUDA GPU when there is one, else the CPU; 'cpu', 'cuda' and 'cuda:N' as named."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise DeviceError(f"unknown device {spec!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {spec}: no CUDA GPU is available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type != "cpu":
        raise DeviceError(f"unsupported device {spec!r} (use auto, cpu, cuda or cuda:N)")
    return device


def describe(device: torch.device) -> str:
    """A short human name: 'cpu (2 cores)' or 'cuda:0 (NVIDIA H100 ...)'."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} cores)"
