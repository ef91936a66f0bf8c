"""Which device to run on: one resolver for training, inference, evaluation and benchmarks."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then the CPU; anything else is passed to torch."""
    if str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
