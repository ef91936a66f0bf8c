"""The learning-rate schedule of every trainer: linear warmup, then cosine decay to a floor."""

from __future__ import annotations

import math

import torch
from transformers import get_cosine_schedule_with_warmup


def cosine_schedule(optimizer, warmup: int, total: int, min_ratio: float):
    """Linear warmup then cosine decay to `min_ratio` of the peak."""
    if min_ratio == 0:
        return get_cosine_schedule_with_warmup(optimizer, warmup, total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
