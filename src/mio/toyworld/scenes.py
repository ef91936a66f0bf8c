"""Procedural scenes: small RGB images of 1-3 coloured shapes on a 3x3 grid, with captions.

The embedded world's images. Every object has a shape, a colour, a size and a grid cell;
each scene gets a light background tint and a small per-object position jitter, so no two
renders are identical while the pixel-level judge (`mio.judges.image`) can still
read every attribute back. Everything is deterministic given a seed.

Tint and jitter are nuisance: a caption cannot predict them. `canonical` gives a scene's
nuisance-free version (a fixed background, no jitter) and `with_nuisance` redraws them,
which is how the image tokenizer is trained and measured to ignore them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "cross")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 160, 55),
    "blue": (40, 70, 215),
    "yellow": (235, 205, 25),
    "purple": (135, 50, 175),
    "orange": (240, 130, 25),
}
SIZES = ("small", "big")
GRID = 3
ROW_NAMES = ("top", "middle", "bottom")
COL_NAMES = ("left", "center", "right")

# Object extents as a fraction of a grid cell; big ones leave a gap to the next cell even
# after jitter so that same-coloured neighbours never touch.
SIZE_FRACTION = {"small": 0.55, "big": 0.84}
JITTER_FRACTION = 0.05
# Background tints stay light and low-saturation so every palette colour stands out.
BACKGROUND_RANGE = (205, 250)
BACKGROUND_SPREAD = 12
# The background of canonical renders: the middle of the tint range, neutral grey.
CANONICAL_BACKGROUND = (235, 235, 235)
# Cross arm thickness as a fraction of the cross's extent.
CROSS_ARM = 0.28


@dataclass(frozen=True)
class SceneObject:
    """One shape in one grid cell."""

    shape: str
    color: str
    size: str
    row: int
    col: int

    @property
    def cell_name(self) -> str:
        """`top left`, `middle center`, ... (the centre cell is just `center`)."""
        if (self.row, self.col) == (1, 1):
            return "center"
        return f"{ROW_NAMES[self.row]} {COL_NAMES[self.col]}"

    def describe(self) -> str:
        """`big red circle`."""
        return f"{self.size} {self.color} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """A scene: its objects (at most one per cell), its background tint and the jitter seed
    (None: objects sit exactly at their cell centres)."""

    objects: tuple[SceneObject, ...]
    background: tuple[int, int, int] = CANONICAL_BACKGROUND
    jitter_seed: int | None = 0

    def key(self) -> frozenset[tuple[str, str, str, int, int]]:
        """The scene's content as a set, for comparing against what a judge reads."""
        return frozenset((o.shape, o.color, o.size, o.row, o.col) for o in self.objects)


@dataclass
class SceneSampler:
    """Draws random scenes; `max_objects` and the attribute lists are configurable."""

    seed: int = 0
    min_objects: int = 1
    max_objects: int = 3
    shapes: tuple[str, ...] = SHAPES
    colors: tuple[str, ...] = tuple(COLORS)
    rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects <= GRID * GRID:
            raise ValueError(f"need 1 <= min_objects <= max_objects <= {GRID * GRID}")
        self.rng = random.Random(self.seed)

    def sample(self) -> Scene:
        """One random scene."""
        r = self.rng
        n = r.randint(self.min_objects, self.max_objects)
        cells = r.sample(range(GRID * GRID), n)
        objects = tuple(
            SceneObject(r.choice(self.shapes), r.choice(self.colors), r.choice(SIZES), c // GRID, c % GRID)
            for c in sorted(cells)
        )
        return Scene(objects, random_background(r), r.randrange(2**31))


def random_background(rng: random.Random) -> tuple[int, int, int]:
    """A light, low-saturation background tint drawn from `rng`."""
    base = rng.randint(*BACKGROUND_RANGE)
    return tuple(min(255, max(0, base + rng.randint(-BACKGROUND_SPREAD, BACKGROUND_SPREAD))) for _ in range(3))


def canonical(scene: Scene) -> Scene:
    """The same objects without nuisance: the fixed `CANONICAL_BACKGROUND` and no jitter."""
    return Scene(scene.objects, CANONICAL_BACKGROUND, None)


def with_nuisance(scene: Scene, seed: int, background: bool = True, jitter: bool = True) -> Scene:
    """The same objects with a new background tint and/or a new jitter seed drawn from `seed`
    (what is not redrawn is kept)."""
    rng = random.Random(seed)
    new_background = random_background(rng) if background else scene.background
    new_jitter = rng.randrange(2**31) if jitter else scene.jitter_seed
    return Scene(scene.objects, new_background, new_jitter)


def sample_scenes(n: int, seed: int = 0) -> list[Scene]:
    """`n` random scenes from a seeded sampler."""
    sampler = SceneSampler(seed=seed)
    return [sampler.sample() for _ in range(n)]


def render(scene: Scene, image_size: int = 64) -> Image.Image:
    """Draw a scene as an `image_size` x `image_size` RGB image (no anti-aliasing, so every
    object pixel has exactly its palette colour)."""
    image = Image.new("RGB", (image_size, image_size), scene.background)
    draw = ImageDraw.Draw(image)
    cell = image_size / GRID
    jitter = None if scene.jitter_seed is None else random.Random(scene.jitter_seed)
    for obj in scene.objects:
        extent = SIZE_FRACTION[obj.size] * cell
        dx, dy = (0.0, 0.0) if jitter is None else (jitter.uniform(-1, 1) * JITTER_FRACTION * cell for _ in range(2))
        cx, cy = (obj.col + 0.5) * cell + dx, (obj.row + 0.5) * cell + dy
        _draw_shape(draw, obj.shape, cx, cy, extent / 2, COLORS[obj.color])
    return image


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "triangle":  # pointing up, filling the box's width and height
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
    elif shape == "cross":
        a = CROSS_ARM * r
        draw.rectangle((cx - r, cy - a, cx + r, cy + a), fill=fill)
        draw.rectangle((cx - a, cy - r, cx + a, cy + r), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r} (known: {', '.join(SHAPES)})")


_OBJECT_PHRASES = (
    "a {desc} {where}",
    "one {desc} {where}",
    "a {desc} placed {where}",
)
_SCENE_PHRASES = (
    "{objects}.",
    "An image showing {objects}.",
    "There is {objects}.",
    "A picture with {objects}.",
)


def _where(obj: SceneObject) -> str:
    return "in the center" if obj.cell_name == "center" else f"at the {obj.cell_name}"


def caption(scene: Scene, seed: int | None = None) -> str:
    """A caption naming every object's size, colour, shape and place. `seed` picks one of
    several phrasings (None: the first, canonical one)."""
    r = random.Random(seed)
    pick = (lambda options: options[0]) if seed is None else r.choice
    parts = [pick(_OBJECT_PHRASES).format(desc=o.describe(), where=_where(o)) for o in scene.objects]
    joined = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    text = pick(_SCENE_PHRASES).format(objects=joined)
    return text[0].upper() + text[1:]
