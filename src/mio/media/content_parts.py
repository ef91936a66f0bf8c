"""OpenAI-style content parts (`{"type": "text", "text": ...}`, `image_url`, `input_audio`,
and video as `video_url` (a data URI of an MP4, WebM, GIF, ...) or `video` (a list of frame
images, as vLLM and Qwen's servers take it)) as MIO segments, so the Python API and a
chat-completions server read the same messages.

Media come as data URIs or base64 (decoded through the same loaders as files, so a picture
gives the same pixels either way) or, where the caller allows it, as local paths. Anything
else is refused with a `ContentError` naming the part and the problem: a part is never read
as text it does not hold.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path

from mio.media.audio import load_audio
from mio.media.image import open_image
from mio.media.video import DEFAULT_FRAME_SIZE, MAX_FRAMES, MIN_FRAMES, VideoFileError, read_video, select_frames
from mio.segments import Image, Segment, Speech, Text, Video

PART_TYPES = ("text", "image_url", "input_audio", "video_url", "video")
AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg")
_DATA_URI = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[^;,]*)*?);base64,(?P<data>.*)", re.S)


class ContentError(ValueError):
    """A content part that cannot be used; the message names the part and the problem."""


def _base64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ContentError(f"{what} is not valid base64") from None


def _field(part: dict, key: str, kind: type, what: str):
    value = part.get(key)
    if not isinstance(value, kind):
        raise ContentError(f"{what} needs {key!r} ({kind.__name__}), got {type(value).__name__}")
    return value


def _data(url: str, what: str) -> bytes:
    match = _DATA_URI.fullmatch(url)
    if match is None:
        raise ContentError(f"a {what} data URI must be base64: data:<type>;base64,...")
    return _base64(match["data"], f"the {what} data URI")


def _image_source(url, what: str, allow_paths: bool) -> bytes | Path:
    """The bytes of a data URI, or a local path where allowed."""
    if not isinstance(url, str):
        raise ContentError(f"{what} needs a data URI or a local path, got {type(url).__name__}")
    if url.startswith("data:"):
        return _data(url, what)
    if re.match(r"[a-z][a-z0-9+.-]*://", url, re.I):
        raise ContentError(f"{what} {url[:60]!r}: URLs are not fetched; give a data URI")
    if not allow_paths:
        raise ContentError(f"{what}: local paths are not allowed here; give a data URI")
    return Path(url)


def _url(part: dict, key: str):
    ref = part.get(key)
    return ref.get("url") if isinstance(ref, dict) else ref


def _image(part: dict, allow_paths: bool) -> Image:
    return Image(image=open_image(_image_source(_url(part, "image_url"), "image_url", allow_paths)))


def _video_url(part: dict, allow_paths: bool) -> Video:
    """A video file's MIN_FRAMES uniformly spaced frames, as `MIO.load_video` picks them."""
    source = _image_source(_url(part, "video_url"), "video_url", allow_paths)
    try:
        clip = read_video(source, max_side=DEFAULT_FRAME_SIZE * 2)
    except VideoFileError as e:
        raise ContentError(f"video_url: {e}") from None
    return Video(frames=[Image(image=f) for f in select_frames(clip, MIN_FRAMES, DEFAULT_FRAME_SIZE)])


def _video_frames(part: dict, allow_paths: bool) -> Video:
    frames = part.get("video")
    if not isinstance(frames, list) or not 2 <= len(frames) <= MAX_FRAMES:
        raise ContentError(f"a video part's 'video' is a list of 2 to {MAX_FRAMES} frame images (data URIs)")
    return Video(frames=[Image(image=open_image(_image_source(f, f"video frame {i}", allow_paths)))
                         for i, f in enumerate(frames)])


def _speech(part: dict) -> Speech:
    audio = _field(part, "input_audio", dict, "an input_audio part")
    data = _field(audio, "data", str, "input_audio")
    fmt = audio.get("format", "wav")
    if fmt not in AUDIO_FORMATS:
        raise ContentError(f"input_audio.format must be one of {', '.join(AUDIO_FORMATS)}, got {fmt!r}")
    wave, rate = load_audio(_base64(data, "input_audio.data"))
    return Speech(wave=wave, sample_rate=rate)


def segment_from_part(part: dict, allow_paths: bool = True) -> Segment:
    """One content part as a segment. `allow_paths`: whether `image_url`, `video_url` and
    video frames may name local files."""
    kind = part.get("type")
    if kind == "text":
        return Text(_field(part, "text", str, "a text part"))
    if kind == "image_url":
        return _image(part, allow_paths)
    if kind == "input_audio":
        return _speech(part)
    if kind == "video_url":
        return _video_url(part, allow_paths)
    if kind == "video":
        return _video_frames(part, allow_paths)
    raise ContentError(f"unknown content part type {kind!r}; types: {', '.join(PART_TYPES)}")
