"""Changes of a scene, and video clips made of them.

A `Change` is one edit of a scene: an object moves, grows, shrinks, changes colour, appears
or disappears. The same changes drive video clips (the change unfolds over 4-8 states),
image editing, chain-of-visual-thought and multi-scene stories. `scene_change` recovers
the change between two object sets, so a judge that reads objects from pixels also reads
the change (`mio.judges.video`).

A `Clip` is a list of scene states; `write_clip` renders it to an MP4 file in which every
state lasts `repeat` frames, so that scene detection finds each state as a shot.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image

from mio.media.video import make_detector, write_mp4
from mio.toyworld.scenes import COLORS, GRID, SHAPES, SIZES, Scene, SceneObject, caption, render

# MP4 frames are drawn this many times larger than the frame size: H.264 at 64 px blurs
# low-contrast shapes (yellow, orange on a light background) enough to misread them.
VIDEO_SCALE = 4
# Scene detection that finds each state of a clip: a change (one small object recoloured) moves
# the content score by only a few units, far below the detector's default; measured on clips
# read back from MP4, 1.0 finds every state change and no false cut. A state lasts >= 2 frames.
STATE_THRESHOLD = 1.0
STATE_MIN_FRAMES = 2
# `mio prepare`'s frame selection (`mio.data.prepare.PrepareConfig` fields) for the world's
# videos: one keyframe per state. An even pick over states of several frames each repeats
# some states and not others, an irregular count no caption can tell.
PREPARE_FRAMES = {"video_frame_selection": "keyframes", "keyframe_threshold": STATE_THRESHOLD,
                  "keyframe_min_frames": STATE_MIN_FRAMES}
KINDS = ("move", "grow", "shrink", "recolor", "appear", "disappear")
NONE, OTHER = "none", "other"
"""Kinds `scene_change` returns when nothing changed, or more than one edit did."""


@dataclass(frozen=True)
class Change:
    """One edit: `before` is the object as it was (None for appear), `after` as it is
    (None for disappear)."""

    kind: str
    before: SceneObject | None = None
    after: SceneObject | None = None


def where(obj: SceneObject) -> str:
    """`at the top left`, `in the center`."""
    return "in the center" if obj.cell_name == "center" else f"at the {obj.cell_name}"


def name(obj: SceneObject) -> str:
    """How an object is referred to: `the red circle` (subjects are unique by colour and shape)."""
    return f"the {obj.color} {obj.shape}"


def _sorted(objects) -> tuple[SceneObject, ...]:
    return tuple(sorted(objects, key=lambda o: (o.row, o.col)))


def apply_change(scene: Scene, change: Change) -> Scene:
    """The scene after the change (background and jitter kept)."""
    objects = [o for o in scene.objects if o != change.before]
    if change.after is not None:
        objects.append(change.after)
    return replace(scene, objects=_sorted(objects))


def _free_cells(scene: Scene) -> list[tuple[int, int]]:
    taken = {(o.row, o.col) for o in scene.objects}
    return [(r, c) for r in range(GRID) for c in range(GRID) if (r, c) not in taken]


def _straight_moves(scene: Scene, obj: SceneObject) -> list[list[tuple[int, int]]]:
    """Paths of one or two free cells in a straight line from `obj` (each step one cell)."""
    free = set(_free_cells(scene))
    paths = []
    for dr, dc in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        path = []
        for step in (1, 2):
            cell = (obj.row + dr * step, obj.col + dc * step)
            if cell not in free:
                break
            path.append(cell)
            paths.append(list(path))
    return paths


def random_change(scene: Scene, rng: random.Random, forbidden: frozenset[tuple[str, str]] = frozenset(),
                  kinds: tuple[str, ...] = KINDS) -> tuple[Change, list[tuple[int, int]]]:
    """A random change of `scene` and, for a move, the path of cells the object steps through.

    The subject is an object whose (colour, shape) is unique in the scene, so `the red
    circle` names it; no new object uses a `forbidden` (colour, shape)."""
    counts: dict[tuple[str, str], int] = {}
    for o in scene.objects:
        counts[(o.color, o.shape)] = counts.get((o.color, o.shape), 0) + 1
    subjects = [o for o in scene.objects if counts[(o.color, o.shape)] == 1]
    options = []
    for kind in kinds:
        if kind == "appear" and _free_cells(scene):
            options.append(kind)
        elif kind == "disappear" and subjects and len(scene.objects) >= 2:
            options.append(kind)
        elif kind in ("move", "recolor", "grow", "shrink") and subjects:
            options.append(kind)
    if not options:
        raise ValueError(f"no change of kinds {kinds} applies to {scene}")
    kind = rng.choice(options)
    if kind == "appear":
        row, col = rng.choice(_free_cells(scene))
        combos = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in forbidden and (c, s) not in counts]
        color, shape = rng.choice(combos)
        return Change(kind, None, SceneObject(shape, color, rng.choice(SIZES), row, col)), []
    subject = rng.choice(subjects)
    if kind == "disappear":
        return Change(kind, subject, None), []
    if kind == "move":
        paths = [p for o in [subject] for p in _straight_moves(scene, o)]
        if not paths:  # boxed in: change its size instead
            kind = "grow" if subject.size == "small" else "shrink"
        else:
            path = rng.choice(paths)
            return Change(kind, subject, replace(subject, row=path[-1][0], col=path[-1][1])), path
    if kind in ("grow", "shrink"):
        kind = "grow" if subject.size == "small" else "shrink"
        return Change(kind, subject, replace(subject, size="big" if kind == "grow" else "small")), []
    colors = [c for c in COLORS if c != subject.color and (c, subject.shape) not in forbidden
              and (c, subject.shape) not in counts]
    return Change("recolor", subject, replace(subject, color=rng.choice(colors))), []


def scene_change(before: frozenset, after: frozenset) -> Change:
    """The change between two object sets (as `Scene.key()` / `image_judge.object_key`
    give them): `none`, one of `KINDS`, or `other` for anything that is not one edit."""
    gone, new = sorted(before - after), sorted(after - before)
    obj = lambda t: SceneObject(*t)  # noqa: E731 - tuples are (shape, color, size, row, col)
    if not gone and not new:
        return Change(NONE)
    if not gone and len(new) == 1:
        return Change("appear", None, obj(new[0]))
    if len(gone) == 1 and not new:
        return Change("disappear", obj(gone[0]), None)
    if len(gone) == 1 and len(new) == 1:
        b, a = obj(gone[0]), obj(new[0])
        same_place = (b.row, b.col) == (a.row, a.col)
        if same_place and b.shape == a.shape and b.size == a.size:
            return Change("recolor", b, a)
        if same_place and b.shape == a.shape and b.color == a.color:
            return Change("grow" if a.size == "big" else "shrink", b, a)
        if not same_place and (b.shape, b.color, b.size) == (a.shape, a.color, a.size):
            return Change("move", b, a)
    return Change(OTHER)


def narrate(change: Change) -> str:
    """One sentence saying what happened: `The red circle moves to the top right.`"""
    if change.kind == "move":
        return f"{name(change.before).capitalize()} moves to the {change.after.cell_name}."
    if change.kind in ("grow", "shrink"):
        return f"{name(change.before).capitalize()} {change.kind}s."
    if change.kind == "recolor":
        return f"{name(change.before).capitalize()} turns {change.after.color}."
    if change.kind == "appear":
        return f"A {change.after.describe()} appears {where(change.after)}."
    if change.kind == "disappear":
        return f"{name(change.before).capitalize()} disappears."
    return "Nothing changes." if change.kind == NONE else "Several things change."


@dataclass(frozen=True)
class Clip:
    """A video: its states in time order and the one change that happens."""

    states: tuple[Scene, ...]
    change: Change


def sample_clip(scene: Scene, rng: random.Random, min_frames: int, max_frames: int,
                forbidden: frozenset[tuple[str, str]] = frozenset()) -> Clip:
    """A clip of `min_frames`-`max_frames` states starting from `scene`: it holds still,
    the change happens (a move one cell per state), and the end state holds."""
    change, path = random_change(scene, rng, forbidden)
    steps = [apply_change(scene, Change("move", change.before, replace(change.before, row=r, col=c))) for r, c in path] \
        if change.kind == "move" else [apply_change(scene, change)]
    n = rng.randint(max(min_frames, len(steps) + 1), max(max_frames, len(steps) + 1))
    start = rng.randint(1, n - len(steps))
    end_hold = n - start - len(steps)
    states = [scene] * start + steps + [steps[-1]] * end_hold
    return Clip(tuple(states), change)


def describe_clip(clip: Clip) -> str:
    """The first state's caption and what happens: a complete, checkable description."""
    return f"{caption(clip.states[0])} Then {narrate(clip.change)[0].lower()}{narrate(clip.change)[1:]}"


def clip_qa(clip: Clip) -> tuple[str, str]:
    """A question about the clip's change with a short answer."""
    c = clip.change
    if c.kind == "move":
        return f"Where does {name(c.before)} move to?", c.after.cell_name
    if c.kind in ("grow", "shrink"):
        return f"Does {name(c.before)} grow or shrink?", c.kind
    if c.kind == "recolor":
        return f"What colour does {name(c.before)} turn?", c.after.color
    if c.kind == "appear":
        return "Which shape appears?", c.after.shape
    return "Which shape disappears?", c.before.shape


def render_clip(clip: Clip, image_size: int = 64) -> list[Image.Image]:
    """One image per state."""
    return [render(s, image_size) for s in clip.states]


def write_clip(clip: Clip, path: str | Path, image_size: int, repeat: int, fps: float, scale: int = VIDEO_SCALE) -> Path:
    """Write the clip as an MP4 in which every state lasts `repeat` frames, drawn `scale`
    times larger than `image_size` (readers resize frames back to `image_size`)."""
    frames = render_clip(clip, image_size * scale)
    return write_mp4([f for f in frames for _ in range(repeat)], path, fps=fps)


def state_detector():
    """A scene detector that cuts a toyworld clip read back from MP4 into its states (one
    keyframe per state), for `mio.media.video.keyframe_indices`."""
    return make_detector("content", STATE_THRESHOLD, STATE_MIN_FRAMES)
