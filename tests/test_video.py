"""Video reading, frame selection (uniform and scene keyframes) and writing, on generated clips."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mio.media import video as V
from mio.toyworld.scenes import Scene, render, sample_scenes

SHOT_LEN = 10


def _shots(n_shots: int = 3, size: int = 96) -> list[Image.Image]:
    """`n_shots` shots of SHOT_LEN frames; within a shot the objects jitter, between shots
    the scene changes (same-ish light background, different objects)."""
    frames = []
    for scene in sample_scenes(n_shots, seed=11):
        for t in range(SHOT_LEN):
            frames.append(render(Scene(scene.objects, scene.background, scene.jitter_seed + t), size))
    return frames


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("video")
    frames = _shots()
    return {
        "mp4": V.write_mp4(frames, root / "shots.mp4", fps=10),
        "gif": V.write_gif(frames, root / "shots.gif", fps=10),
        "root": root,
    }


@pytest.mark.parametrize("kind", ["mp4", "gif"])
def test_write_then_read_round_trip(clip_files, kind):
    clip = V.read_video(clip_files[kind])
    assert len(clip.frames) == 3 * SHOT_LEN
    assert clip.frames[0].shape == (96, 96, 3) and clip.frames[0].dtype == np.uint8
    assert clip.fps == pytest.approx(10, rel=0.05)


def test_other_containers_read(tmp_path):
    import av

    frames = _shots(1, size=64)
    for suffix, codec in ((".avi", "mpeg4"), (".webm", "libvpx")):
        path = tmp_path / f"clip{suffix}"
        with av.open(str(path), "w") as container:
            stream = container.add_stream(codec, rate=10)
            stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
            for f in frames:
                for p in stream.encode(av.VideoFrame.from_image(f)):
                    container.mux(p)
            for p in stream.encode():
                container.mux(p)
        assert len(V.read_video(path).frames) == SHOT_LEN


@pytest.mark.parametrize("kind", ["content", "adaptive", "histogram"])
def test_scene_detectors_find_every_cut(clip_files, kind):
    clip = V.read_video(clip_files["mp4"])
    assert V.scene_starts(clip, V.make_detector(kind)) == [0, SHOT_LEN, 2 * SHOT_LEN]


def test_keyframes_are_one_per_scene_in_time_order(clip_files):
    clip = V.read_video(clip_files["mp4"])
    assert V.keyframe_indices(clip, k=8) == [4, 14, 24]
    assert V.keyframe_indices(clip, k=2) == [4, 24]  # more scenes than k: spread evenly
    frames = V.select_frames(clip, k=8, size=64, method="keyframes")
    assert [f.size for f in frames] == [(64, 64)] * 3
    # Each keyframe matches its shot's first frame far better than another shot's.
    first = [clip.frames[i].astype(float) for i in (0, SHOT_LEN, 2 * SHOT_LEN)]
    for shot, frame in enumerate(frames):
        big = np.asarray(frame.resize((96, 96))).astype(float)
        errors = [np.abs(big - f).mean() for f in first]
        assert int(np.argmin(errors)) == shot


def test_uniform_selection_and_the_frame_count_rule(clip_files):
    clip = V.read_video(clip_files["gif"])
    assert V.uniform_indices(30, 4) == [3, 11, 18, 26]
    assert V.uniform_indices(3, 5) == [0, 1, 2]
    frames = V.select_frames(clip, k=5, size=32)
    assert len(frames) == 5 and frames[0].size == (32, 32)
    # 4 frames for short texts, one more per 16 text tokens, at most 8 ...
    assert V.frames_for_text(5, tokens_per_image=32, token_budget=2800) == 4
    assert V.frames_for_text(40, tokens_per_image=32, token_budget=2800) == 6
    assert V.frames_for_text(500, tokens_per_image=32, token_budget=2800) == 8
    # ... and never more than the budget holds: (34 tokens per frame)
    assert V.frames_for_text(100, tokens_per_image=32, token_budget=100 + 3 * 34 + 5) == 3
    with pytest.raises(ValueError, match="no frame fits"):
        V.frames_for_text(100, tokens_per_image=32, token_budget=120)
    with pytest.raises(ValueError):
        V.select_frames(clip, k=2, size=32, method="random")


def test_bad_video_files_raise_clear_errors(clip_files, tmp_path):
    with pytest.raises(V.VideoFileError, match="not found"):
        V.read_video(tmp_path / "missing.mp4")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01not a video" * 100)
    with pytest.raises(V.VideoFileError, match="garbage.mp4"):
        V.read_video(garbage)
    empty = tmp_path / "empty.webm"
    empty.write_bytes(b"")
    with pytest.raises(V.VideoFileError, match="empty.webm"):
        V.read_video(empty)
    # A truncated file yields the frames before the damage or a clear error, never a hang.
    data = clip_files["mp4"].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    try:
        assert len(V.read_video(cut, max_seconds=10).frames) < 3 * SHOT_LEN
    except V.VideoFileError as e:
        assert "cut.mp4" in str(e)
    # Frame cap: stops early instead of reading everything.
    assert len(V.read_video(clip_files["mp4"], max_frames=7).frames) == 7


def test_zero_frame_and_audio_only_files(tmp_path):
    import av

    silent = tmp_path / "audio.wav"
    with av.open(str(silent), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for p in stream.encode(frame):
            container.mux(p)
        for p in stream.encode():
            container.mux(p)
    with pytest.raises(V.VideoFileError, match="no video stream"):
        V.read_video(silent)
    no_frames = tmp_path / "none.mp4"
    with av.open(str(no_frames), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
    with pytest.raises(V.VideoFileError, match="none.mp4"):
        V.read_video(no_frames)
    with pytest.raises(ValueError):
        V.write_gif([], tmp_path / "x.gif")
