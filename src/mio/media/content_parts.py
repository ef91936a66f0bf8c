"""OpenAI-style content parts (`{"type": "text", "text": ...}`, `image_url`, `input_audio`)
as MIO segments, so the Python API and a chat-completions server read the same messages.

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
from mio.segments import Image, Segment, Speech, Text

PART_TYPES = ("text", "image_url", "input_audio")
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


def _image(part: dict, allow_paths: bool) -> Image:
    ref = part.get("image_url")
    url = ref.get("url") if isinstance(ref, dict) else ref
    if not isinstance(url, str):
        raise ContentError("an image_url part needs image_url.url (a data URI or a local path)")
    if url.startswith("data:"):
        match = _DATA_URI.fullmatch(url)
        if match is None:
            raise ContentError("an image_url data URI must be base64: data:image/png;base64,...")
        return Image(image=open_image(_base64(match["data"], "the image_url data URI")))
    if re.match(r"[a-z][a-z0-9+.-]*://", url, re.I):
        raise ContentError(f"image_url {url[:60]!r}: URLs are not fetched; give a data URI")
    if not allow_paths:
        raise ContentError("image_url: local paths are not allowed here; give a data URI")
    return Image(image=open_image(Path(url)))


def _speech(part: dict) -> Speech:
    audio = _field(part, "input_audio", dict, "an input_audio part")
    data = _field(audio, "data", str, "input_audio")
    fmt = audio.get("format", "wav")
    if fmt not in AUDIO_FORMATS:
        raise ContentError(f"input_audio.format must be one of {', '.join(AUDIO_FORMATS)}, got {fmt!r}")
    wave, rate = load_audio(_base64(data, "input_audio.data"))
    return Speech(wave=wave, sample_rate=rate)


def segment_from_part(part: dict, allow_paths: bool = True) -> Segment:
    """One content part as a segment. `allow_paths`: whether `image_url` may name a local file."""
    kind = part.get("type")
    if kind == "text":
        return Text(_field(part, "text", str, "a text part"))
    if kind == "image_url":
        return _image(part, allow_paths)
    if kind == "input_audio":
        return _speech(part)
    raise ContentError(f"unknown content part type {kind!r}; types: {', '.join(PART_TYPES)}")
