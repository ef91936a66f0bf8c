"""Samples to token ids and loss masks: the paper's pre-training templates and the chat format.

A `Sample` is an ordered list of segments with a data type: one of the six pre-training
types of the paper, or `sft` (a chat with roles). `encode_sample` applies Appendix B's
rules and returns an `Encoded` document: ids, a per-token loss mask, and the data type.

Rules (paper, Appendix B):
- image-text pairs go image-first (captioning) or text-first (generation), 50/50;
- video-text pairs are 60% text-to-video, 40% video-to-text, with 4-8 frames by text length;
- speech-text pairs are ASR or TTS, 50/50; speech longer than 15 s is dropped;
  Stage III uses the second ASR template;
- speech is content-only when it is input and the sequential four-layer pattern when it is
  the target (TTS, or an assistant turn in SFT);
- pre-training trains on every token; SFT trains on assistant turns only.

Text between specials is encoded as one run, exactly as the released tokenizer would split
the rendered string; runs are cut only where the loss mask changes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from mio.segments import Image, Message, Segment, Speech, Text, Video
from mio.templates import GENERATION_PROMPT, PRETRAIN_TEMPLATES, TURN_SEPARATOR, TURN_START, chat_turns
from mio.vocab import Vocab

PRETRAIN_TYPES = (
    "image_text_pair",
    "language",
    "image_text_interleaved",
    "video_text_pair",
    "video_text_interleaved",
    "speech_text_pair",
)
DATA_TYPES = PRETRAIN_TYPES + ("sft",)


@dataclass
class EncodeConfig:
    """How samples become token sequences."""

    caption_probability: float = 0.5
    """Image-text pairs: probability of image-first (captioning) order."""
    video_to_text_probability: float = 0.4
    """Video-text pairs: probability of video-to-text (the paper: 40%; 60% text-to-video)."""
    asr_probability: float = 0.5
    """Speech-text pairs: probability of ASR (speech input) rather than TTS (speech output)."""
    asr_template: str = "asr"
    """`asr` (Stages I-II) or `asr_stage3` ("The transcription of this speech is:")."""
    min_video_frames: int = 4
    """Fewest frames for a video-text pair."""
    max_video_frames: int = 8
    """Most frames for a video-text pair."""
    words_per_extra_frame: int = 8
    """Each this many words of description adds a frame above the minimum."""
    speech_frame_rate: float = 50.0
    """Speech codes per second (per layer); used for the length limit."""
    max_speech_seconds: float = 15.0
    """Speech longer than this is dropped (the paper's rule)."""
    add_bos: bool = True
    """Start every document with the tokenizer's BOS."""
    add_eos: bool = True
    """End pre-training documents with EOS so a base model learns where a document stops."""

    def validate(self) -> None:
        for name in ("caption_probability", "video_to_text_probability", "asr_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.asr_template not in ("asr", "asr_stage3"):
            raise ValueError(f"asr_template must be 'asr' or 'asr_stage3', got {self.asr_template!r}")
        if not 1 <= self.min_video_frames <= self.max_video_frames:
            raise ValueError("need 1 <= min_video_frames <= max_video_frames")


@dataclass
class Sample:
    """One training example before tokenization of its text.

    Pre-training types use `segments`; `sft` uses `messages` (and `mode`, `task`)."""

    data_type: str
    segments: list[Segment] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    mode: str = "std"
    """Chat mode for SFT: std | voice | custom (custom: the first message is the system)."""
    task: str = ""
    """SFT task name, for per-task loss reporting."""


@dataclass
class Encoded:
    """A tokenized document: ids, which of them are loss targets, and its data type."""

    ids: list[int]
    loss: list[bool]
    data_type: str

    def __len__(self) -> int:
        return len(self.ids)


class SampleError(ValueError):
    """A sample cannot be encoded; the message says why."""


def frames_for_text(text: str, cfg: EncodeConfig) -> int:
    """The paper's 4-8 frames per video, more for longer descriptions."""
    extra = len(text.split()) // cfg.words_per_extra_frame
    return min(cfg.max_video_frames, cfg.min_video_frames + extra)


def subsample_frames(frames: list[Image], k: int) -> list[Image]:
    """k frames spread uniformly over the clip, in time order (all of them if fewer)."""
    if len(frames) <= k:
        return list(frames)
    step = len(frames) / k
    return [frames[int(i * step + step / 2)] for i in range(k)]


class _Builder:
    """Accumulates (piece, loss) pieces and encodes each text run in one call."""

    def __init__(self, vocab: Vocab):
        self.vocab = vocab
        self.ids: list[int] = []
        self.loss: list[bool] = []
        self._text = ""
        self._text_loss = False

    def text(self, s: str, loss: bool) -> None:
        if self._text and loss != self._text_loss:
            self._flush()
        self._text += s
        self._text_loss = loss

    def tokens(self, ids: list[int], loss: bool) -> None:
        self._flush()
        self.ids.extend(ids)
        self.loss.extend([loss] * len(ids))

    def segment(self, seg: Segment, loss: bool, speech_timbre: bool) -> None:
        if isinstance(seg, Text):
            self.text(seg.text, loss)
        else:
            self.tokens(self.vocab.segment_ids(seg, speech_timbre=speech_timbre), loss)

    def _flush(self) -> None:
        if self._text:
            ids = self.vocab.encode_text(self._text)
            self.ids.extend(ids)
            self.loss.extend([self._text_loss] * len(ids))
            self._text = ""

    def done(self) -> tuple[list[int], list[bool]]:
        self._flush()
        return self.ids, self.loss


def _template(b: _Builder, name: str, media: Segment, text: str, speech_timbre: bool = False) -> None:
    before, after = PRETRAIN_TEMPLATES[name].split("{media}")
    b.text(before.format(text=text), loss=True)
    b.segment(media, loss=True, speech_timbre=speech_timbre)
    b.text(after.format(text=text), loss=True)


def _pair(sample: Sample, media_type: type) -> tuple[Segment, str]:
    media = [s for s in sample.segments if isinstance(s, media_type)]
    texts = [s for s in sample.segments if isinstance(s, Text)]
    if len(media) != 1 or len(texts) != 1 or len(sample.segments) != 2:
        raise SampleError(f"a {sample.data_type} sample needs exactly one {media_type.__name__} and one Text")
    if not texts[0].text.strip():
        raise SampleError(f"a {sample.data_type} sample has empty text")
    return media[0], texts[0].text


def encode_sample(sample: Sample, vocab: Vocab, cfg: EncodeConfig, rng: random.Random) -> Encoded | None:
    """Encode one sample; returns None when a paper rule drops it (speech over the limit)."""
    if sample.data_type not in DATA_TYPES:
        raise SampleError(f"unknown data type {sample.data_type!r}; known: {', '.join(DATA_TYPES)}")
    if sample.data_type == "sft":
        return _encode_chat(sample, vocab, cfg)
    if not sample.segments:
        raise SampleError(f"empty {sample.data_type} sample")

    b = _Builder(vocab)
    if cfg.add_bos and vocab.bos_id is not None:
        b.tokens([vocab.bos_id], loss=False)
    kind = sample.data_type
    if kind == "image_text_pair":
        image, caption = _pair(sample, Image)
        name = "image_caption" if rng.random() < cfg.caption_probability else "image_generation"
        _template(b, name, image, caption)
    elif kind == "video_text_pair":
        video, description = _pair(sample, Video)
        frames = subsample_frames(video.frames, frames_for_text(description, cfg))
        name = "video_caption" if rng.random() < cfg.video_to_text_probability else "video_generation"
        _template(b, name, Video(frames=frames), description)
    elif kind == "speech_text_pair":
        speech, transcript = _pair(sample, Speech)
        if speech.codes is not None and speech.codes.shape[-1] / cfg.speech_frame_rate > cfg.max_speech_seconds:
            return None
        if rng.random() < cfg.asr_probability:
            _template(b, cfg.asr_template, speech, transcript, speech_timbre=False)
        else:
            _template(b, "tts", speech, transcript, speech_timbre=True)
    else:  # language and the interleaved types: segments in order, no template
        if not any(not isinstance(s, Text) or s.text.strip() for s in sample.segments):
            raise SampleError(f"empty {kind} sample")
        for seg in sample.segments:
            b.segment(seg, loss=True, speech_timbre=False)
    if cfg.add_eos and vocab.eos_id is not None:
        b.tokens([vocab.eos_id], loss=True)
    ids, loss = b.done()
    return Encoded(ids, loss, kind)


def _chat(b: _Builder, turns: list[tuple[str, object]], train: bool) -> None:
    """Yi chat turns joined by `\\n`. When `train`, the loss covers each assistant turn's
    content and its `<|im_end|>`; assistant speech is written with its timbre layers."""
    for i, (role, content) in enumerate(turns):
        if i:
            b.text(TURN_SEPARATOR, loss=False)
        b.tokens([b.vocab.im_start], loss=False)
        b.text(TURN_START.format(role=role).removeprefix("<|im_start|>"), loss=False)
        assistant = role == "assistant"
        for seg in [Text(content)] if isinstance(content, str) else content:
            b.segment(seg, loss=train and assistant, speech_timbre=assistant)
        b.tokens([b.vocab.im_end], loss=train and assistant)


def _encode_chat(sample: Sample, vocab: Vocab, cfg: EncodeConfig) -> Encoded:
    """Yi chat format; loss on assistant content and its `<|im_end|>` only."""
    if not sample.messages:
        raise SampleError("empty sft sample: no messages")
    turns = chat_turns([{"role": m.role, "content": m.content} for m in sample.messages], sample.mode)
    if turns[-1][0] != "assistant":
        raise SampleError("an sft sample must end with an assistant turn")
    b = _Builder(vocab)
    if cfg.add_bos and vocab.bos_id is not None:
        b.tokens([vocab.bos_id], loss=False)
    _chat(b, turns, train=True)
    ids, loss = b.done()
    return Encoded(ids, loss, "sft/" + sample.task if sample.task else "sft")


def encode_prompt(messages: list[Message], vocab: Vocab, mode: str = "std") -> list[int]:
    """Ids of a chat prompt ending in the generation prompt (used by the engine)."""
    turns = chat_turns([{"role": m.role, "content": m.content} for m in messages], mode)
    b = _Builder(vocab)
    if vocab.bos_id is not None:
        b.tokens([vocab.bos_id], loss=False)
    _chat(b, turns, train=False)
    b.text(TURN_SEPARATOR, loss=False)
    b.tokens([vocab.im_start], loss=False)
    b.text(GENERATION_PROMPT.removeprefix("<|im_start|>"), loss=False)
    return b.done()[0]
