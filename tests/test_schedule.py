"""The one learning-rate schedule: warmup reaches the peak on its last step, cosine ends at the floor."""

import pytest
import torch

from mio.train.schedule import cosine_factor, cosine_schedule


def test_warmup_then_cosine_to_the_floor():
    factors = [cosine_factor(s, warmup=4, total=20, min_ratio=0.1) for s in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]  # no step at zero, the last warmup step at the peak
    assert factors[4] == 1.0 and all(a >= b for a, b in zip(factors[4:], factors[5:]))
    assert cosine_factor(20, 4, 20, 0.1) == pytest.approx(0.1) and cosine_factor(99, 4, 20, 0.1) == pytest.approx(0.1)
    assert cosine_factor(0, 0, 10) == 1.0 and cosine_factor(10, 0, 10) == pytest.approx(0.0)


def test_scheduler_sets_the_optimizer_rate():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = cosine_schedule(optimizer, warmup=2, total=10, min_ratio=0.5)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[:3] == [1.0, 2.0, 2.0] and rates[-1] > 1.0
