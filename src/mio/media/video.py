"""Video as a sequence of image-tokenized frames: safe reading, frame selection, writing.

MIO tokenizes a video by picking a few frames and tokenizing each as an image. Frames are
picked either uniformly, with the count following the paper's rule (4-8 frames per
video-text pair, more for longer texts, capped so the frames fit a token budget), or as
keyframes at scene changes found by PySceneDetect. Reading is bounded (frames, packets and
seconds), so a damaged or endless file gives a `VideoFileError`, never a hang.
Writing goes back out through Pillow (GIF) and PyAV (MP4).
"""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image as PILImage
from scenedetect import AdaptiveDetector, ContentDetector, HistogramDetector
from scenedetect.common import FrameTimecode

log = logging.getLogger(__name__)

# Paper: 4-8 frames per video-text pair, chosen by text length.
MIN_FRAMES, MAX_FRAMES = 4, 8
# One frame more than MIN_FRAMES for every this many text tokens.
TEXT_TOKENS_PER_EXTRA_FRAME = 16
# `<image>` and `</image>` around each frame's codes.
IMAGE_BLOCK_OVERHEAD = 2
# Reading bounds: a file is refused past these instead of being read forever.
DEFAULT_MAX_FRAMES = 3000
DEFAULT_MAX_SECONDS = 60.0
PACKETS_PER_FRAME_LIMIT = 4
# Frames fed to the scene detector are this wide (enough for colour/edge statistics, cheap).
DETECTOR_WIDTH = 128
FALLBACK_FPS = 25.0
DEFAULT_FRAME_SIZE = 224
"""Frame side for videos read from files or bytes when the image tokenizer does not say its input size."""


class VideoFileError(ValueError):
    """A video file cannot be used; the message names the file and the problem."""


@dataclass
class VideoClip:
    """Decoded frames (RGB uint8 arrays [H, W, 3]) with their frame rate."""

    frames: list[np.ndarray]
    fps: float
    path: str = ""


def read_video(path: str | Path | bytes, max_frames: int = DEFAULT_MAX_FRAMES, max_seconds: float = DEFAULT_MAX_SECONDS,
               max_side: int | None = None) -> VideoClip:
    """Decode a video's frames (mp4, avi, webm, gif, ...; a file or its bytes) with PyAV.

    Reading stops after `max_frames` frames (with a warning: the rest is not used) and fails
    after `max_seconds` of decoding or `PACKETS_PER_FRAME_LIMIT * max_frames` packets, so a
    damaged file cannot hang the caller. `max_side` downscales frames as they are decoded
    to bound memory. Raises `VideoFileError` for missing, unreadable, frameless or truncated
    files."""
    if isinstance(path, bytes):
        source, path = io.BytesIO(path), "the video data"
    else:
        path = source = Path(path)
        if not path.is_file():
            raise VideoFileError(f"{path}: video file not found")
    frames: list[np.ndarray] = []
    # One reformatter for the whole file keeps its colour-conversion context: a new one per
    # frame (what `frame.to_ndarray(format=...)` does) cost five times the decoding.
    reformatter = VideoReformatter()
    started = time.monotonic()
    try:
        with av.open(source if isinstance(source, io.BytesIO) else str(source), mode="r") as container:
            if not container.streams.video:
                raise VideoFileError(f"{path}: no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or FALLBACK_FPS)
            for packets, packet in enumerate(container.demux(stream), 1):
                if packets > PACKETS_PER_FRAME_LIMIT * max_frames or time.monotonic() - started > max_seconds:
                    raise VideoFileError(f"{path}: gave up reading after {packets} packets and "
                                         f"{time.monotonic() - started:.0f}s ({len(frames)} frames)")
                for frame in packet.decode():
                    width, height = frame.width, frame.height
                    if max_side and max(width, height) > max_side:
                        scale = max_side / max(width, height)
                        width, height = max(1, round(width * scale)), max(1, round(height * scale))
                    frames.append(reformatter.reformat(frame, width=width, height=height, format="rgb24").to_ndarray())
                if len(frames) >= max_frames:
                    log.warning("%s: read the first %d frames only", path, len(frames))
                    break
    except VideoFileError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        if not frames:
            raise VideoFileError(f"{path}: cannot read video ({e})") from None
        log.warning("%s: video is damaged after frame %d (%s); using the frames read", path, len(frames), e)
    if not frames:
        raise VideoFileError(f"{path}: video has no frames")
    return VideoClip(frames, fps, str(path))


def frames_for_text(text_tokens: int, tokens_per_image: int, token_budget: int,
                    min_frames: int = MIN_FRAMES, max_frames: int = MAX_FRAMES) -> int:
    """How many frames a video-text pair gets: `min_frames`, one more for every
    `TEXT_TOKENS_PER_EXTRA_FRAME` text tokens, at most `max_frames`, and no more than fit in
    `token_budget` beside the text (each frame costs tokens_per_image + 2 for `<image>`
    `</image>`). Raises ValueError when not even one frame fits."""
    wanted = min(max_frames, min_frames + text_tokens // TEXT_TOKENS_PER_EXTRA_FRAME)
    fit = (token_budget - text_tokens) // (tokens_per_image + IMAGE_BLOCK_OVERHEAD)
    if fit < 1:
        raise ValueError(f"no frame fits: {text_tokens} text tokens leave {token_budget - text_tokens} of the "
                         f"{token_budget}-token budget, a frame needs {tokens_per_image + IMAGE_BLOCK_OVERHEAD}")
    return min(wanted, fit)


def uniform_indices(num_frames: int, k: int) -> list[int]:
    """`k` frame indices spread evenly over `num_frames` (the centre of each of k equal
    spans), in order; all frames if there are no more than k."""
    if num_frames <= k:
        return list(range(num_frames))
    return [int((i + 0.5) * num_frames / k) for i in range(k)]


def make_detector(kind: str = "content", threshold: float | None = None, min_scene_len: int = 3):
    """A PySceneDetect detector. `content` (default) is ContentDetector with a threshold of
    12 instead of 27: the stock 27 misses cuts between similar-coloured shots; `adaptive`
    and `histogram` are the alternatives. `min_scene_len` is in frames."""
    if kind == "content":
        return ContentDetector(threshold=12.0 if threshold is None else threshold, min_scene_len=min_scene_len)
    if kind == "adaptive":
        return AdaptiveDetector(adaptive_threshold=3.0 if threshold is None else threshold, min_scene_len=min_scene_len)
    if kind == "histogram":
        return HistogramDetector(threshold=0.05 if threshold is None else threshold, min_scene_len=min_scene_len)
    raise ValueError(f"unknown scene detector {kind!r} (known: content, adaptive, histogram)")


def scene_starts(clip: VideoClip, detector=None) -> list[int]:
    """Indices of the first frame of every scene (always including 0), in order."""
    detector = detector or make_detector()
    fps = Fraction(clip.fps).limit_denominator(1001)
    cuts: list[int] = []
    for i, frame in enumerate(clip.frames):
        small = PILImage.fromarray(frame)
        if small.width > DETECTOR_WIDTH:
            small = small.resize((DETECTOR_WIDTH, max(1, round(small.height * DETECTOR_WIDTH / small.width))))
        bgr = np.ascontiguousarray(np.asarray(small)[:, :, ::-1])  # detectors expect OpenCV's BGR
        cuts += [c.frame_num for c in detector.process_frame(FrameTimecode(i, fps), bgr)]
    if clip.frames:
        cuts += [c.frame_num for c in detector.post_process(FrameTimecode(len(clip.frames) - 1, fps))]
    return sorted({0, *cuts})


def keyframe_indices(clip: VideoClip, k: int, detector=None) -> list[int]:
    """At most `k` keyframes in time order: the middle frame of each detected scene; when
    there are more scenes than `k`, scenes spread evenly over the list are kept."""
    starts = scene_starts(clip, detector)
    ends = starts[1:] + [len(clip.frames)]
    middles = [(s + e - 1) // 2 for s, e in zip(starts, ends)]
    return [middles[i] for i in uniform_indices(len(middles), k)]


def select_frames(clip: VideoClip, k: int, size: int, method: str = "uniform", detector=None) -> list[PILImage.Image]:
    """Pick frames from a clip (`uniform` or `keyframes`), in time order, resized to
    `size` x `size` (the image tokenizer's input size)."""
    if k < 1:
        raise ValueError(f"need at least one frame, got k={k}")
    if method == "uniform":
        indices = uniform_indices(len(clip.frames), k)
    elif method == "keyframes":
        indices = keyframe_indices(clip, k, detector)
    else:
        raise ValueError(f"unknown frame selection {method!r} (known: uniform, keyframes)")
    return [PILImage.fromarray(clip.frames[i]).resize((size, size), PILImage.Resampling.BICUBIC) for i in indices]


def write_gif(frames: list[PILImage.Image], path: str | Path, fps: float = 2.0) -> Path:
    """Write frames as a looping GIF."""
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    path = Path(path)
    rgb = [f.convert("RGB") for f in frames]
    rgb[0].save(path, save_all=True, append_images=rgb[1:], duration=round(1000 / fps), loop=0)
    return path


def write_mp4(frames: list[PILImage.Image], path: str | Path, fps: float = 2.0) -> Path:
    """Write frames as an H.264 MP4 (sizes rounded up to even, which yuv420p needs)."""
    if not frames:
        raise ValueError(f"{path}: no frames to write")
    path = Path(path)
    width, height = frames[0].size
    width, height = width + width % 2, height + height % 2
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for image in frames:
            image = image.convert("RGB")
            if image.size != (width, height):
                image = image.resize((width, height), PILImage.Resampling.BICUBIC)
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
