"""The learning-rate schedule of every trainer (the stages, the image and speech tokenizers):
linear warmup to the peak, then cosine decay to a floor."""

from __future__ import annotations

import math

import torch


def cosine_factor(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """The learning rate at optimizer step `step` (0-based) as a fraction of the peak.

    Warmup climbs linearly so that its last step runs at the peak (no step at zero); the
    remaining `total - warmup` steps follow a cosine from the peak down to `min_ratio`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def cosine_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int, min_ratio: float = 0.0):
    """A scheduler that sets `optimizer`'s learning rates to peak x `cosine_factor`."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_factor(step, warmup, total, min_ratio))
