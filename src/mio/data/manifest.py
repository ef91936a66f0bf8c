"""Corpus manifests: JSON Lines files listing samples and where their media files are.

One JSON object per line; blank lines are skipped. Media paths are relative to the
manifest file's directory (absolute paths are kept as they are).

Pre-training line (`type` is one of the six pre-training data types; it may be left out
when the manifest is listed under its data type in the prepare config):

    {"type": "image_text_pair", "segments": [{"image": "img/0.png"}, {"text": "a red circle"}]}

`segments` is the ordered content; each segment is exactly one of

    {"text": "..."}
    {"image": "a.png"}                      any image Pillow reads
    {"video": "clip.mp4"}                   a video file (frames picked by mio.media.video)
    {"video": ["f0.png", "f1.png", ...]}    a video given as its frames, in time order
    {"speech": "a.wav"}                     any audio soundfile reads

Pairs (`image_text_pair`, `video_text_pair`, `speech_text_pair`) hold exactly one medium of
their kind and one text; `language` holds text only; the interleaved types hold any mix.

SFT line (`mode` std | voice | custom, default std; `task` names the task for per-task
reporting and the shard directory `sft/<task>`):

    {"type": "sft", "task": "asr", "mode": "std", "messages": [
        {"role": "user", "content": [{"text": "Transcribe:"}, {"speech": "q.wav"}]},
        {"role": "assistant", "content": "hello world"}]}

`content` is a string or a list of segments as above. Any line may carry an `"id"` string
for the user's bookkeeping. Unknown keys are errors (they are usually typos), and every
error names the manifest file and line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mio.data.encode import PRETRAIN_TYPES
from mio.segments import ROLES
from mio.templates import MODES

SFT = "sft"
MANIFEST_TYPES = PRETRAIN_TYPES + (SFT,)
MEDIA_KINDS = ("image", "video", "speech")
SEGMENT_KEYS = ("text",) + MEDIA_KINDS
PAIR_MEDIA = {"image_text_pair": "image", "video_text_pair": "video", "speech_text_pair": "speech"}
"""Pair types and the one medium each holds beside its text."""
PRETRAIN_KEYS = {"type", "segments", "id"}
SFT_KEYS = {"type", "messages", "mode", "task", "id"}


class ManifestError(ValueError):
    """A manifest line is malformed; the message starts with `file:line`."""


@dataclass(frozen=True)
class MediaRef:
    """A medium named by a manifest: one file, or (a video given as frames) several."""

    kind: str
    """image | video | speech"""
    paths: tuple[Path, ...]
    frames: bool = False
    """True for a video given as a list of frame images."""


Part = str | MediaRef
"""A segment of a record: text, or a reference to a medium."""


@dataclass
class Record:
    """One manifest line, validated, with media paths resolved."""

    data_type: str
    where: str
    """`manifest:line`, for error messages."""
    segments: list[Part] = field(default_factory=list)
    messages: list[tuple[str, str | list[Part]]] = field(default_factory=list)
    mode: str = "std"
    task: str = ""

    def media(self) -> Iterator[MediaRef]:
        """Every medium the record names, in order."""
        parts = list(self.segments)
        for _, content in self.messages:
            if not isinstance(content, str):
                parts.extend(content)
        return (p for p in parts if isinstance(p, MediaRef))


def read_manifest(path: str | Path, data_type: str | None = None) -> Iterator[Record]:
    """Parse a manifest line by line. `data_type`, when given, is the type of every line
    (a line's own `type`, if present, must agree)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    if data_type is not None and data_type not in MANIFEST_TYPES:
        raise ManifestError(f"{path}: unknown data type {data_type!r}; known: {', '.join(MANIFEST_TYPES)}")
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                yield parse_line(line, path.parent, f"{path}:{number}", data_type)


def parse_line(line: str, base: Path, where: str, data_type: str | None = None) -> Record:
    """Validate one JSON line and resolve its paths against `base`."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{where}: invalid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ManifestError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    kind = obj.get("type", data_type)
    if kind is None:
        raise ManifestError(f"{where}: missing \"type\" (one of {', '.join(MANIFEST_TYPES)})")
    if kind not in MANIFEST_TYPES:
        raise ManifestError(f"{where}: unknown type {kind!r}; known: {', '.join(MANIFEST_TYPES)}")
    if data_type is not None and kind != data_type:
        raise ManifestError(f"{where}: type {kind!r} in a manifest of {data_type!r}")
    if "id" in obj and not isinstance(obj["id"], str):
        raise ManifestError(f"{where}: \"id\" must be a string")
    allowed = SFT_KEYS if kind == SFT else PRETRAIN_KEYS
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ManifestError(f"{where}: unknown key {unknown[0]!r} for a {kind} line (allowed: {', '.join(sorted(allowed))})")
    if kind == SFT:
        return _sft_record(obj, base, where)
    segments = _segments(obj.get("segments"), base, where, "segments")
    _check_structure(kind, segments, where)
    return Record(kind, where, segments=segments)


def _sft_record(obj: dict, base: Path, where: str) -> Record:
    mode, task = obj.get("mode", "std"), obj.get("task", "")
    if mode not in MODES:
        raise ManifestError(f"{where}: mode {mode!r} is not one of {', '.join(MODES)}")
    if not isinstance(task, str) or "/" in task:
        raise ManifestError(f"{where}: \"task\" must be a string without '/'")
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ManifestError(f"{where}: \"messages\" must be a non-empty list")
    parsed = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise ManifestError(f"{where}: messages[{i}] must be an object with exactly \"role\" and \"content\"")
        if m["role"] not in ROLES:
            raise ManifestError(f"{where}: messages[{i}] has role {m['role']!r}; roles are {', '.join(ROLES)}")
        content = m["content"]
        if not isinstance(content, str):
            content = _segments(content, base, where, f"messages[{i}].content")
        parsed.append((m["role"], content))
    return Record(SFT, where, messages=parsed, mode=mode, task=task)


def _segments(value, base: Path, where: str, name: str) -> list[Part]:
    if not isinstance(value, list) or not value:
        raise ManifestError(f"{where}: {name!r} must be a non-empty list of segments")
    return [_segment(seg, base, f"{where}: {name}[{i}]") for i, seg in enumerate(value)]


def _segment(seg, base: Path, where: str) -> Part:
    if not isinstance(seg, dict) or len(seg) != 1 or next(iter(seg)) not in SEGMENT_KEYS:
        raise ManifestError(f"{where}: a segment is an object with one key of {', '.join(SEGMENT_KEYS)}, got {seg!r}")
    (key, value), = seg.items()
    if key == "text":
        if not isinstance(value, str):
            raise ManifestError(f"{where}: text must be a string")
        return value
    if key == "video" and isinstance(value, list):
        if not value or not all(isinstance(p, str) and p for p in value):
            raise ManifestError(f"{where}: a video's frame list must be non-empty paths")
        return MediaRef("video", tuple(base / p for p in value), frames=True)
    if not isinstance(value, str) or not value:
        raise ManifestError(f"{where}: {key} must be a path" + (" or a list of frame paths" if key == "video" else ""))
    return MediaRef(key, (base / value,))


def _check_structure(kind: str, segments: list[Part], where: str) -> None:
    """The shape rules of each pre-training type, checked before any media are loaded."""
    texts = [s for s in segments if isinstance(s, str)]
    media = [s for s in segments if isinstance(s, MediaRef)]
    if kind in PAIR_MEDIA:
        want = PAIR_MEDIA[kind]
        if len(segments) != 2 or len(texts) != 1 or media[0].kind != want:
            raise ManifestError(f"{where}: a {kind} line needs exactly one {want} segment and one text segment")
        if not texts[0].strip():
            raise ManifestError(f"{where}: a {kind} line has empty text")
    elif kind == "language" and media:
        raise ManifestError(f"{where}: a language line holds text segments only")
