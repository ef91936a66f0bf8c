"""A deterministic pixel-level judge: read the objects of a procedural scene back from pixels.

It finds the background as the median border colour, marks pixels far from it as
foreground, splits the foreground into connected components (scikit-image), and reads each
component's colour (majority nearest palette colour of its most saturated pixels), shape
(solidity and bounding-box fill), size (bounding-box extent relative to a grid cell) and
grid cell (bounding-box centre). The judge is used on tokenizer reconstructions and on
generated images, so it is validated against ground-truth renders (`validate`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage import measure

from mio.toyworld.scenes import COLORS, GRID, SIZE_FRACTION, Scene, SceneObject, render, sample_scenes

# A pixel is foreground when its RGB distance to the background exceeds this; every palette
# colour is more than twice as far from any background tint.
FOREGROUND_DISTANCE = 70.0
# Components smaller than this fraction of a cell are noise (blur fringes, speckles).
MIN_AREA_FRACTION = 0.08
# The colour vote uses the component's pixels at least this far (quantile) from background,
# so blurred edges (e.g. pink between red and white, nearer orange) do not vote.
CORE_QUANTILE = 0.5
# Shape decision: a cross is the only non-convex shape; the convex ones differ in how much
# of their bounding box they fill (triangle 1/2, circle pi/4, square 1).
CROSS_MAX_SOLIDITY = 0.845
TRIANGLE_MAX_EXTENT = 0.64
CIRCLE_MAX_EXTENT = 0.89
SIZE_THRESHOLD = (SIZE_FRACTION["small"] + SIZE_FRACTION["big"]) / 2

_PALETTE_NAMES = tuple(COLORS)
_PALETTE = np.array([COLORS[c] for c in _PALETTE_NAMES], dtype=np.float32)


def _background(pixels: np.ndarray) -> np.ndarray:
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return np.median(border, axis=0)


def _shape(region) -> str:
    if region.solidity < CROSS_MAX_SOLIDITY:
        return "cross"
    if region.extent < TRIANGLE_MAX_EXTENT:
        return "triangle"
    if region.extent < CIRCLE_MAX_EXTENT:
        return "circle"
    return "square"


def read_objects(image: Image.Image) -> list[SceneObject]:
    """The objects a square scene image shows, sorted by cell (row, then column)."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    height, width, _ = pixels.shape
    cell_h, cell_w = height / GRID, width / GRID
    distance_to_bg = np.linalg.norm(pixels - _background(pixels), axis=-1)
    mask = ndimage.binary_fill_holes(distance_to_bg > FOREGROUND_DISTANCE)
    labels = measure.label(mask, connectivity=1)
    min_area = MIN_AREA_FRACTION * cell_h * cell_w
    objects = []
    for region in measure.regionprops(labels):
        if region.area < min_area:
            continue
        rows, cols = region.coords[:, 0], region.coords[:, 1]
        dist = distance_to_bg[rows, cols]
        core = pixels[rows, cols][dist >= np.quantile(dist, CORE_QUANTILE)]
        nearest = np.argmin(((core[:, None, :] - _PALETTE[None]) ** 2).sum(-1), axis=1)
        color = _PALETTE_NAMES[Counter(nearest.tolist()).most_common(1)[0][0]]
        top, left, bottom, right = region.bbox
        extent = np.sqrt(((bottom - top) / cell_h) * ((right - left) / cell_w))
        size = "big" if extent > SIZE_THRESHOLD else "small"
        row = min(GRID - 1, int((top + bottom) / 2 / cell_h))
        col = min(GRID - 1, int((left + right) / 2 / cell_w))
        objects.append(SceneObject(_shape(region), color, size, row, col))
    return sorted(objects, key=lambda o: (o.row, o.col))


def object_key(objects: Iterable[SceneObject]) -> frozenset:
    """Objects as a comparable set (same form as `Scene.key`)."""
    return frozenset((o.shape, o.color, o.size, o.row, o.col) for o in objects)


def score(scenes: Sequence[Scene], images: Sequence[Image.Image]) -> dict[str, float]:
    """How well the judge's reading of `images` matches the `scenes` they should show.

    `exact`: fraction of images read exactly right (every object, every attribute, nothing
    extra); `object_recall`: fraction of true objects read exactly; `n`: images scored."""
    if len(scenes) != len(images):
        raise ValueError(f"{len(scenes)} scenes but {len(images)} images")
    exact = found = total = 0
    for scene, image in zip(scenes, images):
        truth, read = scene.key(), object_key(read_objects(image))
        exact += truth == read
        found += len(truth & read)
        total += len(truth)
    n = len(scenes)
    return {"exact": exact / max(n, 1), "object_recall": found / max(total, 1), "n": n}


def validate(n: int = 200, seed: int = 12345, image_size: int = 64) -> dict[str, float]:
    """The judge's own accuracy on `n` ground-truth renders (the bar is >= 0.99 exact)."""
    scenes = sample_scenes(n, seed=seed)
    return score(scenes, [render(s, image_size) for s in scenes])
