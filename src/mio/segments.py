"""The units of a multimodal sequence: text, image, video, speech, and chat messages.

A segment carries either the raw medium (a PIL image, a waveform), its discrete codes, or
both. Tokenizers fill in codes from media; de-tokenizers fill in media from codes. The
vocabulary turns segments into model ids and back (`mio.vocab.Vocab`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image as PILImage


@dataclass
class Text:
    """A run of plain text. Text is always text: `<img5>` inside it is never a media token."""

    text: str


@dataclass
class Image:
    """One image: `codes` is a 1-D LongTensor of tokens_per_image codes, `image` a PIL image."""

    codes: torch.Tensor | None = None
    image: PILImage.Image | None = None


@dataclass
class Video:
    """A video as an ordered list of frames, each an `Image`."""

    frames: list[Image] = field(default_factory=list)


@dataclass
class Speech:
    """An utterance.

    `codes` is a LongTensor [layers, T]: row 0 is content, rows 1..3 timbre. A content-only
    utterance (speech used as input) has shape [1, T]. `wave` is a 1-D float tensor at
    `sample_rate` Hz.
    """

    codes: torch.Tensor | None = None
    wave: torch.Tensor | None = None
    sample_rate: int | None = None


@dataclass
class Malformed:
    """A media block the model opened but did not write correctly (wrong length, wrong
    code range, cut off by the token limit). Kept in place so callers can report it."""

    modality: str
    reason: str
    ids: list[int] = field(default_factory=list)


Segment = Text | Image | Video | Speech | Malformed

ROLES = ("system", "user", "assistant")


@dataclass
class Message:
    """One chat turn: a role and its content, a string or a list of segments."""

    role: str
    content: str | list[Segment]

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"message role must be one of {ROLES}, got {self.role!r}")

    @property
    def segments(self) -> list[Segment]:
        """The content as a list of segments (a string becomes one `Text`)."""
        return [Text(self.content)] if isinstance(self.content, str) else list(self.content)
