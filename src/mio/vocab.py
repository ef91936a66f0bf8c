"""The unified vocabulary: text ids, image codes, speech codes and the media specials.

MIO extends a text tokenizer with four specials (`<image> </image> <spch> </spch>`), one
token per image code (`<img0>`..) and one per speech code of each of the four RVQ layers
(`<spch0>`.., layer l code c is `<spch{l * speech_codebook + c}>`). The released MIO-7B
tokenizer adds 4 + 8192 + 4096 = 12292 tokens to Yi's; small embedded tokenizers add fewer
(`VocabLayout`). `Vocab` reads the ids of all of them from a loaded tokenizer, so the same
code serves our own tokenizers and the released one.

Media ids are made only from codes. User text is encoded with special-token parsing off,
so a user who types `<img12>` or `<|im_end|>` gets text ids, never a media or chat token.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mio.segments import Image, Malformed, Segment, Speech, Text, Video

IMAGE_START, IMAGE_END, SPEECH_START, SPEECH_END = "<image>", "</image>", "<spch>", "</spch>"
MEDIA_SPECIALS = (IMAGE_START, IMAGE_END, SPEECH_START, SPEECH_END)
IM_START, IM_END = "<|im_start|>", "<|im_end|>"

PAPER_SPEECH_CODEBOOK = 1024


@dataclass(frozen=True)
class VocabLayout:
    """Sizes of the media part of the vocabulary.

    The paper's layout is the default: 8192 image codes, 32 per image, and 4 speech layers
    of 1024 codes (4 + 8192 + 4096 = 12292 added rows)."""

    image_codebook_size: int = 8192
    """Number of distinct image codes (`<img0>` .. `<img{n-1}>`)."""
    tokens_per_image: int = 32
    """Codes per image block."""
    speech_codebook_size: int = 1024
    """Codes per speech RVQ layer."""
    speech_layers: int = 4
    """RVQ layers kept: layer 0 is content, the rest timbre."""

    @property
    def num_added(self) -> int:
        """Rows the media tokens add to the embedding and LM head."""
        return len(MEDIA_SPECIALS) + self.image_codebook_size + self.speech_layers * self.speech_codebook_size

    def media_tokens(self) -> list[str]:
        """All media token strings, in the order they are added to a tokenizer."""
        return (
            list(MEDIA_SPECIALS)
            + [f"<img{i}>" for i in range(self.image_codebook_size)]
            + [f"<spch{i}>" for i in range(self.speech_layers * self.speech_codebook_size)]
        )


def _integers(values: list, what: str) -> list:
    """`values` as ints when every one is an integer (bools and floats are refused, not rounded)."""
    bad = next((v for v in values if not _is_integer(v)), None)
    if bad is not None:
        raise ValueError(f"{what} must be integers, got {bad!r}")
    return [int(v) for v in values]


def _is_integer(value) -> bool:
    if isinstance(value, torch.Tensor):
        return value.dim() == 0 and not (value.dtype.is_floating_point or value.dtype.is_complex
                                         or value.dtype == torch.bool)
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _as_rows(codes, what: str) -> list:
    """Codes (a tensor or nested sequences) as nested lists of ints."""
    if isinstance(codes, torch.Tensor):
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise ValueError(f"{what} must be integers, got a {codes.dtype} tensor")
        return codes.tolist()
    return list(codes)


def _as_code_list(codes: Sequence[int] | torch.Tensor) -> list[int]:
    return _integers(_as_rows(codes, "media codes"), "media codes")


def render_image(codes: Sequence[int] | torch.Tensor) -> str:
    """Render image codes as the released checkpoints' string: `<image><img..>...</image>`."""
    return IMAGE_START + "".join(f"<img{c}>" for c in _as_code_list(codes)) + IMAGE_END


def render_speech(
    codes: Sequence[Sequence[int]] | torch.Tensor, timbre: bool, codebook_size: int = PAPER_SPEECH_CODEBOOK
) -> str:
    """Render speech codes (layers x T) as `<spch>...</spch>`.

    `timbre=False` renders the content row only (speech as input); `timbre=True` renders the
    sequential pattern content, timbre-1, timbre-2, timbre-3 with layer l offset by
    l * codebook_size (speech as output)."""
    rows = codes.tolist() if isinstance(codes, torch.Tensor) else [list(r) for r in codes]
    if rows and not isinstance(rows[0], list):  # a single content row given as 1-D
        rows = [rows]
    if not rows:
        raise ValueError("render_speech: no speech codes")
    if len({len(r) for r in rows}) != 1:
        raise ValueError(f"render_speech: speech layers have unequal lengths {[len(r) for r in rows]}")
    layers = rows if timbre else rows[:1]
    body = "".join(f"<spch{layer * codebook_size + int(c)}>" for layer, row in enumerate(layers) for c in row)
    return SPEECH_START + body + SPEECH_END


class Vocab:
    """Maps between model ids, media codes, segments and token strings.

    Built from a HF tokenizer that already holds the media tokens (see
    `mio.tokenizers.text.add_media_tokens`). Each media range must be contiguous, which is
    how tokens added in order are laid out; this lets range checks be two comparisons.
    """

    def __init__(self, tokenizer, layout: VocabLayout):
        self.tokenizer = tokenizer
        self.layout = layout
        self.size = len(tokenizer)

        def tid(token: str) -> int:
            i = tokenizer.convert_tokens_to_ids(token)
            if i is None or i == tokenizer.unk_token_id or tokenizer.convert_ids_to_tokens(i) != token:
                raise ValueError(f"tokenizer has no token {token!r}; add the media tokens first")
            return i

        self.image_start, self.image_end = tid(IMAGE_START), tid(IMAGE_END)
        self.speech_start, self.speech_end = tid(SPEECH_START), tid(SPEECH_END)
        self.im_start, self.im_end = tid(IM_START), tid(IM_END)
        self.eos_id = tokenizer.eos_token_id
        self.bos_id = tokenizer.bos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id

        self.image_offset = self._contiguous(tid, "<img{}>", layout.image_codebook_size)
        self.speech_offset = self._contiguous(tid, "<spch{}>", layout.speech_layers * layout.speech_codebook_size)
        self.media_special_ids = (self.image_start, self.image_end, self.speech_start, self.speech_end)

    @staticmethod
    def _contiguous(tid, pattern: str, n: int) -> int:
        first, last = tid(pattern.format(0)), tid(pattern.format(n - 1))
        if last - first != n - 1:
            raise ValueError(f"tokens {pattern.format(0)}..{pattern.format(n - 1)} are not contiguous ids")
        return first

    # ---- ranges (half-open [lo, hi)) used by packing statistics and the engine ----

    @property
    def image_range(self) -> tuple[int, int]:
        return self.image_offset, self.image_offset + self.layout.image_codebook_size

    def speech_layer_range(self, layer: int) -> tuple[int, int]:
        lo = self.speech_offset + layer * self.layout.speech_codebook_size
        return lo, lo + self.layout.speech_codebook_size

    @property
    def speech_range(self) -> tuple[int, int]:
        return self.speech_offset, self.speech_offset + self.layout.speech_layers * self.layout.speech_codebook_size

    def modality_of(self, ids: torch.Tensor) -> torch.Tensor:
        """Per-id modality: 0 text (and chat specials), 1 image (codes and image specials),
        2 speech (codes and speech specials). Used for per-modality loss reporting."""
        out = torch.zeros_like(ids)
        lo, hi = self.image_range
        out[(ids >= lo) & (ids < hi) | (ids == self.image_start) | (ids == self.image_end)] = 1
        lo, hi = self.speech_range
        out[(ids >= lo) & (ids < hi) | (ids == self.speech_start) | (ids == self.speech_end)] = 2
        return out

    # ---- encoding ----

    def encode_text(self, text: str) -> list[int]:
        """Text to ids with special-token parsing off: typed `<img5>` stays text."""
        if not text:
            return []
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def image_ids(self, codes: Sequence[int] | torch.Tensor) -> list[int]:
        """`<image>` + one id per code + `</image>`; checks count and range."""
        codes = _as_code_list(codes)
        n, size = self.layout.tokens_per_image, self.layout.image_codebook_size
        if len(codes) != n:
            raise ValueError(f"an image has {n} codes, got {len(codes)}")
        bad = [c for c in codes if not 0 <= c < size]
        if bad:
            raise ValueError(f"image code {bad[0]} out of range [0, {size})")
        return [self.image_start] + [self.image_offset + c for c in codes] + [self.image_end]

    def speech_ids(self, codes: Sequence[Sequence[int]] | torch.Tensor, timbre: bool) -> list[int]:
        """`<spch>` + content ids (+ the three timbre blocks if `timbre`) + `</spch>`."""
        rows = [_as_rows(r, "speech codes") if isinstance(r, (list, tuple, torch.Tensor)) and not _is_integer(r) else r
                for r in _as_rows(codes, "speech codes")]
        if rows and not isinstance(rows[0], list):
            rows = [rows]
        if not rows or not rows[0]:
            raise ValueError("speech has no codes")
        rows = [_integers(row, "speech codes") for row in rows]
        if len({len(r) for r in rows}) != 1:
            raise ValueError(f"speech layers have unequal lengths {[len(r) for r in rows]}")
        need = self.layout.speech_layers if timbre else 1
        if len(rows) < need:
            raise ValueError(f"speech output needs {need} code layers, got {len(rows)}")
        size = self.layout.speech_codebook_size
        ids = [self.speech_start]
        for layer, row in enumerate(rows[:need]):
            bad = [c for c in row if not 0 <= c < size]
            if bad:
                raise ValueError(f"speech code {bad[0]} (layer {layer}) out of range [0, {size})")
            base = self.speech_offset + layer * size
            ids.extend(base + c for c in row)
        ids.append(self.speech_end)
        return ids

    def segment_ids(self, segment: Segment, speech_timbre: bool = False) -> list[int]:
        """Ids of one segment (media must already carry codes)."""
        if isinstance(segment, Text):
            return self.encode_text(segment.text)
        if isinstance(segment, Image):
            if segment.codes is None:
                raise ValueError("image segment has no codes; tokenize it first")
            return self.image_ids(segment.codes)
        if isinstance(segment, Video):
            if not segment.frames:
                raise ValueError("video segment has no frames")
            return [i for frame in segment.frames for i in self.segment_ids(frame)]
        if isinstance(segment, Speech):
            if segment.codes is None:
                raise ValueError("speech segment has no codes; tokenize it first")
            return self.speech_ids(segment.codes, timbre=speech_timbre)
        raise TypeError(f"cannot encode segment of type {type(segment).__name__}")

    # ---- decoding ----

    def decode_text(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def to_string(self, ids: Sequence[int] | torch.Tensor) -> str:
        """The released checkpoints' string form of an id sequence."""
        return self.decode_text(_as_code_list(ids))

    def parse(self, ids: Sequence[int] | torch.Tensor, video: bool = False) -> list[Segment]:
        """Split a token stream into segments.

        Text runs become `Text`; well-formed media blocks become `Image` / `Speech` with codes;
        a block with the wrong length, codes of the wrong range or order, or no closing token
        becomes `Malformed` with the reason. With `video=True`, adjacent image blocks merge
        into one `Video`. Never raises on model output."""
        ids = _as_code_list(ids)
        out: list[Segment] = []
        text_run: list[int] = []

        def flush_text() -> None:
            if text_run:
                out.append(Text(self.decode_text(text_run)))
                text_run.clear()

        i = 0
        while i < len(ids):
            tok = ids[i]
            if tok in (self.image_start, self.speech_start):
                flush_text()
                close = self.image_end if tok == self.image_start else self.speech_end
                j = i + 1
                while j < len(ids) and ids[j] != close and ids[j] not in (self.image_start, self.speech_start):
                    j += 1
                closed = j < len(ids) and ids[j] == close
                body = ids[i + 1 : j]
                parser = self._parse_image if tok == self.image_start else self._parse_speech
                seg = parser(body) if closed else Malformed(
                    "image" if tok == self.image_start else "speech", "block not closed", ids[i:j]
                )
                out.append(seg)
                i = j + 1 if closed else j
                continue
            if tok in (self.image_end, self.speech_end) or self._is_media_code(tok):
                flush_text()
                out.append(Malformed("image" if self._is_image(tok) else "speech", "media token outside a block", [tok]))
                i += 1
                continue
            text_run.append(tok)
            i += 1
        flush_text()
        return _merge_video(out) if video else out

    def _is_image(self, tok: int) -> bool:
        lo, hi = self.image_range
        return lo <= tok < hi or tok in (self.image_start, self.image_end)

    def _is_media_code(self, tok: int) -> bool:
        lo, hi = self.image_range
        slo, shi = self.speech_range
        return lo <= tok < hi or slo <= tok < shi

    def _parse_image(self, body: list[int]) -> Segment:
        lo, hi = self.image_range
        n = self.layout.tokens_per_image
        if any(not lo <= t < hi for t in body):
            return Malformed("image", "non-image token inside an image block", body)
        if len(body) != n:
            return Malformed("image", f"image block has {len(body)} codes, expected {n}", body)
        return Image(codes=torch.tensor([t - lo for t in body], dtype=torch.long))

    def _parse_speech(self, body: list[int]) -> Segment:
        size, layers = self.layout.speech_codebook_size, self.layout.speech_layers
        slo, shi = self.speech_range
        if not body:
            return Malformed("speech", "empty speech block", body)
        if any(not slo <= t < shi for t in body):
            return Malformed("speech", "non-speech token inside a speech block", body)
        layer_of = [(t - slo) // size for t in body]
        if all(layer == 0 for layer in layer_of):  # content only
            return Speech(codes=torch.tensor([[t - slo for t in body]], dtype=torch.long))
        if len(body) % layers:
            return Malformed("speech", f"{len(body)} speech codes do not split into {layers} equal blocks", body)
        t = len(body) // layers
        expected = [layer for layer in range(layers) for _ in range(t)]
        if layer_of != expected:
            return Malformed("speech", "speech layers out of order or of unequal length", body)
        codes = torch.tensor(body, dtype=torch.long).view(layers, t) - slo
        codes -= torch.arange(layers).unsqueeze(1) * size
        return Speech(codes=codes)


class StreamParser:
    """`Vocab.parse` one token at a time: `feed` returns the segments a token completes (text
    as it comes, a media block when it closes, a video when something other than a frame
    follows it), `close` the rest. Joined, with adjacent `Text` pieces merged, they are what
    `parse` gives for the whole sequence, whatever the sequence is."""

    def __init__(self, vocab: Vocab, video: bool):
        self.vocab, self.video = vocab, video
        self.text_ids: list[int] = []
        self.text_sent = 0  # characters of the current text run already returned
        self.block: list[int] | None = None  # the open media block, opener included
        self.frames: list[Image] = []  # closed image blocks that may still become a video

    def feed(self, token: int) -> list[Segment]:
        """The segments `token` completes."""
        v = self.vocab
        opens = (v.image_start, v.speech_start)
        out: list[Segment] = []
        if self.block is not None:
            if token not in opens:
                self.block.append(token)
                if token != (v.image_end if self.block[0] == v.image_start else v.speech_end):
                    return []
                (segment,) = v.parse(self.block)
                self.block = None
                return self._emit(segment)
            (unclosed,) = v.parse(self.block)  # an opener before the closer: "block not closed"
            self.block = None
            out = self._emit(unclosed)
        if token in opens:
            self.block = [token]
            return out + self._flush_text()
        if token in (v.image_end, v.speech_end) or v._is_media_code(token):
            return out + self._flush_text() + self._emit(*v.parse([token]))
        out += self._flush_frames()
        self.text_ids.append(token)
        text = v.decode_text(self.text_ids)
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            out.append(Text(text[self.text_sent:]))
            self.text_sent = len(text)
        return [s for s in out if not isinstance(s, Text) or s.text]

    def close(self) -> list[Segment]:
        """Whatever is left when the sequence ends (an unclosed block comes back `Malformed`)."""
        out = self._flush_text()
        if self.block is not None:
            out += self._emit(*self.vocab.parse(self.block))
            self.block = None
        return out + self._flush_frames()

    def _emit(self, segment: Segment) -> list[Segment]:
        if self.video and isinstance(segment, Image):
            self.frames.append(segment)
            return []
        return self._flush_frames() + [segment]

    def _flush_frames(self) -> list[Segment]:
        frames, self.frames = self.frames, []
        if not frames:
            return []
        return [frames[0]] if len(frames) == 1 else [Video(frames=frames)]

    def _flush_text(self) -> list[Segment]:
        text = self.vocab.decode_text(self.text_ids)[self.text_sent:]
        self.text_ids, self.text_sent = [], 0
        return [Text(text)] if text else []


def _merge_video(segments: list[Segment]) -> list[Segment]:
    """Merge runs of two or more adjacent images into a Video."""
    out: list[Segment] = []
    for seg in segments:
        if isinstance(seg, Image) and out and isinstance(out[-1], (Image, Video)):
            prev = out.pop()
            frames = prev.frames if isinstance(prev, Video) else [prev]
            out.append(Video(frames=frames + [seg]))
        else:
            out.append(seg)
    return out
