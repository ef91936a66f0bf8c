"""A judge of videos: the image judge on every frame, plus the change between frames.

Each frame is read back into objects by `mio.judges.image`. A video is right when
the change from its first to its last frame is the change the clip should show
(`change_accuracy`); beside that the judge reports whether the first and last frames are
exactly right, the fraction of frames exactly right against the true state at the same
relative time (`frame_exact`), and whether every step between consecutive frames is at
most one edit between non-empty frames (`consistency`: objects do not flicker, jump or
morph, and do not vanish altogether). `validate` measures
the judge on ground-truth clips written to MP4 and read back.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from mio.judges.image import object_key, read_objects
from mio.media.video import read_video, select_frames
from mio.toyworld.scenes import SceneSampler
from mio.toyworld.videos import OTHER, Clip, sample_clip, scene_change, write_clip
from mio.toyworld.world import item_rng


def read_states(frames: Sequence[Image.Image]) -> list[frozenset]:
    """The objects of every frame, as comparable sets."""
    return [object_key(read_objects(f)) for f in frames]


def judge_clip(clip: Clip, frames: Sequence[Image.Image]) -> dict[str, float]:
    """Scores of one video against the clip it should show (all 0 for no frames)."""
    if not frames:
        return {"change_correct": 0.0, "first_exact": 0.0, "last_exact": 0.0, "frame_exact": 0.0, "consistency": 0.0}
    read = read_states(frames)
    truth = [s.key() for s in clip.states]
    aligned = [truth[i] for i in _aligned_indices(len(truth), len(read))]
    steps = [bool(a) and bool(b) and scene_change(a, b).kind != OTHER for a, b in zip(read, read[1:])]
    return {
        "change_correct": float(scene_change(read[0], read[-1]) == clip.change),
        "first_exact": float(read[0] == truth[0]),
        "last_exact": float(read[-1] == truth[-1]),
        "frame_exact": sum(r == t for r, t in zip(read, aligned)) / len(read),
        "consistency": sum(steps) / len(steps) if steps else 1.0,
    }


def _aligned_indices(n_truth: int, n_frames: int) -> list[int]:
    """For each of `n_frames` frames, the true state at the same relative time."""
    if n_frames == n_truth:
        return list(range(n_truth))
    return [min(n_truth - 1, int((i + 0.5) * n_truth / n_frames)) for i in range(n_frames)]


def score(clips: Sequence[Clip], videos: Sequence[Sequence[Image.Image]]) -> dict[str, float]:
    """Mean scores over clips: `change_accuracy`, `first_exact`, `last_exact`,
    `frame_exact`, `consistency`, and `n`."""
    if len(clips) != len(videos):
        raise ValueError(f"{len(clips)} clips but {len(videos)} videos")
    per = [judge_clip(c, v) for c, v in zip(clips, videos)]
    n = max(len(per), 1)
    keys = ("change_correct", "first_exact", "last_exact", "frame_exact", "consistency")
    means = {k: sum(p[k] for p in per) / n for k in keys}
    means["change_accuracy"] = means.pop("change_correct")
    return {**means, "n": len(per)}


def validate(n: int = 100, seed: int = 4321, image_size: int = 64, repeat: int = 3, fps: float = 6.0,
             min_frames: int = 4, max_frames: int = 8) -> dict[str, float]:
    """The judge's accuracy on `n` ground-truth clips written as MP4, read back and
    subsampled to one frame per state by `mio.media.video` (as training data is)."""
    clips = []
    for i in range(n):
        rng = item_rng(seed, "video-judge", i)
        scene = SceneSampler(seed=rng.randrange(2**31), min_objects=2).sample()
        clips.append(sample_clip(scene, rng, min_frames, max_frames))
    videos = []
    with tempfile.TemporaryDirectory(prefix="mio-video-judge-") as tmp:
        for i, clip in enumerate(clips):
            path = write_clip(clip, Path(tmp) / f"{i}.mp4", image_size, repeat, fps)
            videos.append(select_frames(read_video(path), len(clip.states), image_size, method="uniform"))
    return score(clips, videos)
