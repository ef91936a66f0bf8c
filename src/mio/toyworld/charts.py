"""Bar charts for chart understanding: 2-4 coloured bars with letter labels and values 1-5.

A chart is drawn on a light background with a baseline; each bar has a distinct palette
colour and a letter label under it. Questions ask for the colour of the tallest or
shortest bar, the value of a bar, or the number of bars; each has one short answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

from mio.toyworld.scenes import COLORS

MIN_BARS, MAX_BARS = 2, 4
MAX_VALUE = 5
LABELS = "ABCD"
BACKGROUND = (245, 245, 240)
AXIS = (60, 60, 60)
# Layout as fractions of the image side: the plot area and the label strip under it.
MARGIN = 0.08
LABEL_STRIP = 0.16
BAR_FILL = 0.7
"""Fraction of each bar's slot its bar fills."""


@dataclass(frozen=True)
class Chart:
    """Bars as (colour, value), left to right."""

    bars: tuple[tuple[str, int], ...]

    def value(self, color: str) -> int:
        """The value of the bar of `color`."""
        return dict(self.bars)[color]


def sample_chart(rng: random.Random) -> Chart:
    """A random chart whose tallest and shortest bars are unique (so questions about them
    have one answer)."""
    while True:
        n = rng.randint(MIN_BARS, MAX_BARS)
        colors = rng.sample(sorted(COLORS), n)
        values = [rng.randint(1, MAX_VALUE) for _ in range(n)]
        if values.count(max(values)) == 1 and values.count(min(values)) == 1:
            return Chart(tuple(zip(colors, values)))


def render_chart(chart: Chart, image_size: int = 64) -> Image.Image:
    """Draw the chart as an `image_size` square RGB image."""
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    left = top = MARGIN * image_size
    right = image_size - MARGIN * image_size
    base = image_size - LABEL_STRIP * image_size
    draw.line((left, base, right, base), fill=AXIS, width=1)
    slot = (right - left) / len(chart.bars)
    unit = (base - top) / MAX_VALUE
    for i, (color, value) in enumerate(chart.bars):
        x0 = left + i * slot + slot * (1 - BAR_FILL) / 2
        x1 = x0 + slot * BAR_FILL
        draw.rectangle((x0, base - value * unit, x1, base - 1), fill=COLORS[color])
        draw.text(((x0 + x1) / 2, base + 1), LABELS[i], fill=AXIS, anchor="mt")
    return image


def chart_qa(chart: Chart, rng: random.Random) -> tuple[str, str]:
    """A (question, answer) pair about the chart."""
    kind = rng.randrange(4)
    if kind == 0:
        return "Which colour is the tallest bar?", max(chart.bars, key=lambda b: b[1])[0]
    if kind == 1:
        return "Which colour is the shortest bar?", min(chart.bars, key=lambda b: b[1])[0]
    if kind == 2:
        color, value = rng.choice(chart.bars)
        return f"What is the value of the {color} bar?", str(value)
    return "How many bars are there?", str(len(chart.bars))
