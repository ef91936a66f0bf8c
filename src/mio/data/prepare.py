"""`mio prepare CONFIG`: tokenize a corpus once, offline, into training shards.

Reads manifests (`mio.data.manifest`), loads each distinct media file once (images with
Pillow, audio with soundfile, video files through `mio.media.video`), tokenizes images
in batches and speech one utterance at a time through the tokenizer protocol, encodes every
sample with the paper's rules (`mio.data.encode`) and writes shards per data type:

    OUTPUT/<data_type>/shard_00000/ ...      (SFT: OUTPUT/sft/<task>/shard_00000/ ...)
    OUTPUT/prepare_summary.json              counts, token totals, drops, timings

All manifests are validated before any media is touched, so a bad line fails in seconds.
Every sample's random choices (caption vs generation order, ASR vs TTS) come from its own
RNG seeded by (seed, manifest file name, line): the output does not depend on the order or
number of manifests, nor on the folder they are in. Samples a paper rule drops (speech over
the limit) are counted, not errors.
The summary is written last: an output directory without it is an interrupted run.

A config (TOML, keys of `PrepareConfig`):

    output_dir = "data/shards"
    text_tokenizer = "runs/tok/text"
    image_tokenizer = "runs/tok/image"
    speech_tokenizer = "runs/tok/speech"
    manifests = ["data/pretrain.jsonl", "data/sft.jsonl"]
    [typed_manifests]
    language = ["data/wiki.jsonl"]
    [layout]          # must match the tokenizers; the paper's sizes by default
    image_codebook_size = 8192
    [encode]
    asr_template = "asr"

Training then reads `data/shards/<data_type>` as the sources of a `MixtureConfig`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from PIL import Image as PILImage
from tqdm import tqdm

from mio.data.encode import EncodeConfig, Sample, SampleError, encode_sample, frames_for_text, subsample_frames
from mio.data.manifest import MANIFEST_TYPES, SFT, ManifestError, Part, Record, read_manifest
from mio.data.shards import ShardWriter
from mio.media.audio import load_audio
from mio.media.image import open_image
from mio.segments import Image, Message, Segment, Speech, Text, Video
from mio.tokenizers.base import load_tokenizer
from mio.tokenizers.text import load_text_tokenizer
from mio.vocab import Vocab, VocabLayout

log = logging.getLogger(__name__)

SUMMARY_FILE = "prepare_summary.json"
SHARD_NAME = "shard_{:05d}"


@dataclass
class PrepareConfig:
    """What `mio prepare` reads, how it tokenizes, and where it writes. Paths in the config
    are relative to the working directory; paths inside manifests to the manifest."""

    output_dir: str
    """Directory that receives `<data_type>/shard_NNNNN/` and `prepare_summary.json`."""
    text_tokenizer: str
    """Text tokenizer directory (with the media tokens added)."""
    manifests: list[str] = field(default_factory=list)
    """Manifests whose lines each carry a `"type"`."""
    typed_manifests: dict[str, list[str]] = field(default_factory=dict)
    """Data type -> manifests whose lines are all of that type (`"type"` may be left out)."""
    image_tokenizer: str = ""
    """Image tokenizer directory; needed when any sample has an image or video."""
    speech_tokenizer: str = ""
    """Speech tokenizer directory; needed when any sample has speech."""
    layout: VocabLayout = field(default_factory=VocabLayout)
    """Media vocabulary sizes; must match the tokenizers."""
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    """Templates and rules applied to every sample."""
    seed: int = 0
    """Seed of the per-sample random choices."""
    docs_per_shard: int = 50_000
    """Documents per shard before a new one is started."""
    records_per_chunk: int = 256
    """Records whose media are gathered and tokenized together (bounds memory)."""
    image_batch_size: int = 64
    """Images per image-tokenizer call."""
    video_frame_selection: Literal["uniform", "keyframes"] = "uniform"
    """How frames are picked from video files: evenly spaced, or the middle frame of each
    scene that the content detector finds (at most the frames a sample wants)."""
    keyframe_threshold: float | None = None
    """The content detector's cut threshold for `keyframes` (None: its default, 12)."""
    keyframe_min_frames: int = 3
    """The fewest frames a scene lasts for `keyframes`."""
    overwrite: bool = False
    """Replace data-type directories and the summary already in output_dir."""

    def validate(self) -> None:
        if not self.manifests and not self.typed_manifests:
            raise ValueError("no manifests: set manifests or typed_manifests")
        for data_type in self.typed_manifests:
            if data_type not in MANIFEST_TYPES:
                raise ValueError(f"typed_manifests: unknown data type {data_type!r}; known: {', '.join(MANIFEST_TYPES)}")
        for name in ("docs_per_shard", "records_per_chunk", "image_batch_size", "keyframe_min_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        self.encode.validate()


class MediaError(ValueError):
    """A media file cannot be used; the message names the manifest line and the file."""


class OutputExistsError(FileExistsError, ValueError):
    """The output is already there (a ValueError too, so the CLI reports it in one line)."""


def load_video_frames(path: Path, k: int, method: str, detector=None) -> list[PILImage.Image]:
    """`k` frames of a video file, in time order, chosen by `method` (`keyframes` cuts scenes
    with `detector`, default `mio.media.video.make_detector()`)."""
    try:
        from mio.media import video
    except ImportError as e:
        raise MediaError(
            f"{path}: reading video files needs mio.media.video ({e}); give the video as a frame list instead"
        ) from None
    clip = video.read_video(path)
    if method == "keyframes":
        indices = video.keyframe_indices(clip, k, detector)
    else:
        indices = video.uniform_indices(len(clip.frames), k)
    return [PILImage.fromarray(clip.frames[i]) for i in indices]


class _ShardSink:
    """Rolls one data type's documents over numbered shards."""

    def __init__(self, directory: Path, vocab_size: int, layout: dict, docs_per_shard: int):
        self.directory, self.vocab_size, self.layout, self.docs_per_shard = directory, vocab_size, layout, docs_per_shard
        self.writer: ShardWriter | None = None
        self.shards = self.docs = self.tokens = self.loss_tokens = 0

    def append(self, doc) -> None:
        if self.writer is None:
            self.writer = ShardWriter(self.directory / SHARD_NAME.format(self.shards), self.vocab_size, self.layout)
        self.writer.append(doc)
        self.docs += 1
        self.tokens += len(doc.ids)
        self.loss_tokens += sum(doc.loss)
        if len(self.writer) >= self.docs_per_shard:
            self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer, self.shards = None, self.shards + 1

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


class _Tokenized:
    """Codes of every distinct medium, each file tokenized once (keyed by path)."""

    def __init__(self, cfg: PrepareConfig, image_tokenizer, speech_tokenizer):
        self.cfg = cfg
        self.image_tokenizer, self.speech_tokenizer = image_tokenizer, speech_tokenizer
        self.images: dict[Path, torch.Tensor] = {}
        self.videos: dict[tuple[Path, int], list[torch.Tensor]] = {}
        self.speech: dict[Path, torch.Tensor] = {}
        self.speech_seconds: dict[Path, float] = {}
        self._pending: dict[Path, PILImage.Image] = {}
        self._pending_videos: dict[tuple[Path, int], list[PILImage.Image]] = {}

    def gather(self, record: Record) -> bool:
        """Load the record's media not seen yet; speech is tokenized here. Returns False when
        the record is dropped by the speech length rule (its speech is then not tokenized)."""
        for ref in record.media():
            if ref.kind == "image":
                self._want_image(ref.paths[0])
            elif ref.kind == "video":
                k = self._frames_wanted(record)
                if ref.frames:
                    for path in subsample_frames(list(ref.paths), k):
                        self._want_image(path)
                elif (ref.paths[0], k) not in self.videos and (ref.paths[0], k) not in self._pending_videos:
                    self._pending_videos[(ref.paths[0], k)] = self._video_frames(ref.paths[0], k)
            elif ref.paths[0] not in self.speech:
                path = ref.paths[0]
                wave, rate = load_audio(path)
                seconds = wave.shape[-1] / rate
                if record.data_type == "speech_text_pair" and seconds > self.cfg.encode.max_speech_seconds:
                    return False
                codes = self.speech_tokenizer.encode(wave, rate)
                if codes.dim() != 2 or codes.shape[0] < self.cfg.layout.speech_layers:
                    raise MediaError(
                        f"{path}: speech tokenizer returned shape {tuple(codes.shape)}, "
                        f"expected [{self.cfg.layout.speech_layers}, T]"
                    )
                self.speech[path] = codes[: self.cfg.layout.speech_layers]
                self.speech_seconds[path] = seconds
        return True

    def _video_frames(self, path: Path, k: int) -> list[PILImage.Image]:
        detector = None
        if self.cfg.video_frame_selection == "keyframes":
            from mio.media.video import make_detector  # a detector keeps state: one per video

            detector = make_detector("content", self.cfg.keyframe_threshold, self.cfg.keyframe_min_frames)
        return load_video_frames(path, k, self.cfg.video_frame_selection, detector)

    def _frames_wanted(self, record: Record) -> int:
        # Video-text pairs get the paper's 4-8 frames by description length; other videos the most.
        if record.data_type == "video_text_pair":
            return frames_for_text(next(s for s in record.segments if isinstance(s, str)), self.cfg.encode)
        return self.cfg.encode.max_video_frames

    def _want_image(self, path: Path) -> None:
        if path not in self.images and path not in self._pending:
            self._pending[path] = open_image(path)

    def flush(self) -> None:
        """Tokenize the images and video frames gathered so far, in batches."""
        keys: list[Path | tuple[Path, int]] = list(self._pending)
        pictures = list(self._pending.values())
        spans = {}
        for key, frames in self._pending_videos.items():
            spans[key] = (len(pictures), len(pictures) + len(frames))
            pictures.extend(frames)
        if not pictures:
            return
        codes = []
        for start in range(0, len(pictures), self.cfg.image_batch_size):
            codes.append(self.image_tokenizer.encode(pictures[start : start + self.cfg.image_batch_size]))
        codes = torch.cat(codes)
        expected = (len(pictures), self.cfg.layout.tokens_per_image)
        if tuple(codes.shape) != expected:
            raise MediaError(f"image tokenizer returned codes of shape {tuple(codes.shape)}, expected {expected}")
        for i, key in enumerate(keys):
            self.images[key] = codes[i]
        for key, (lo, hi) in spans.items():
            self.videos[key] = list(codes[lo:hi])
        self._pending.clear()
        self._pending_videos.clear()

    def segment(self, part: Part, record: Record) -> Segment:
        """A segment with codes for a manifest part (after `flush`)."""
        if isinstance(part, str):
            return Text(part)
        if part.kind == "image":
            return Image(codes=self.images[part.paths[0]])
        if part.kind == "speech":
            return Speech(codes=self.speech[part.paths[0]])
        k = self._frames_wanted(record)
        if part.frames:
            return Video(frames=[Image(codes=self.images[p]) for p in subsample_frames(list(part.paths), k)])
        return Video(frames=[Image(codes=c) for c in self.videos[(part.paths[0], k)]])


def _manifest_list(cfg: PrepareConfig) -> list[tuple[Path, str | None]]:
    listed = [(Path(p), None) for p in cfg.manifests]
    listed += [(Path(p), t) for t, paths in sorted(cfg.typed_manifests.items()) for p in paths]
    return listed


def _scan(manifests: list[tuple[Path, str | None]]) -> tuple[dict[str, int], set[str], set[str]]:
    """Validate every line; count records per type and note media kinds and output roots."""
    counts: dict[str, int] = {}
    kinds: set[str] = set()
    roots: set[str] = set()
    for path, data_type in manifests:
        for record in read_manifest(path, data_type):
            counts[record.data_type] = counts.get(record.data_type, 0) + 1
            kinds.update(ref.kind for ref in record.media())
            roots.add(record.data_type)
    return counts, kinds, roots


def _to_sample(record: Record, media: _Tokenized) -> Sample:
    if record.data_type == SFT:
        messages = [
            Message(role, content if isinstance(content, str) else [media.segment(p, record) for p in content])
            for role, content in record.messages
        ]
        return Sample(SFT, messages=messages, mode=record.mode, task=record.task)
    return Sample(record.data_type, segments=[media.segment(p, record) for p in record.segments])


def _sample_key(record: Record) -> str:
    """`manifest file name:line`: where a sample sits, leaving out the folders, so that the
    same corpus gives the same shards wherever it is stored (two demo runs in two output
    directories drew different ASR/TTS and caption/generation choices when the full path
    seeded them)."""
    path, line = record.where.rsplit(":", 1)
    return f"{Path(path).name}:{line}"


def _chunks(manifests: list[tuple[Path, str | None]], size: int) -> Iterator[list[Record]]:
    chunk: list[Record] = []
    for path, data_type in manifests:
        for record in read_manifest(path, data_type):
            chunk.append(record)
            if len(chunk) == size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def prepare(cfg: PrepareConfig, image_tokenizer=None, speech_tokenizer=None) -> dict:
    """Run the whole preparation; returns the summary (also written to the output directory).

    Tokenizer objects given here are used instead of loading the configured directories."""
    cfg.validate()
    started = time.monotonic()
    out = Path(cfg.output_dir)
    manifests = _manifest_list(cfg)
    counts, kinds, roots = _scan(manifests)
    total = sum(counts.values())
    log.info("%d records in %d manifests: %s", total, len(manifests), counts)

    if kinds & {"image", "video"} and image_tokenizer is None:
        if not cfg.image_tokenizer:
            raise ValueError("the manifests have images or videos but image_tokenizer is not set")
        image_tokenizer = load_tokenizer(cfg.image_tokenizer)
    if "speech" in kinds and speech_tokenizer is None:
        if not cfg.speech_tokenizer:
            raise ValueError("the manifests have speech but speech_tokenizer is not set")
        speech_tokenizer = load_tokenizer(cfg.speech_tokenizer)
    _check_tokenizers(cfg.layout, image_tokenizer, speech_tokenizer)
    vocab = Vocab(load_text_tokenizer(cfg.text_tokenizer), cfg.layout)

    existing = [out / r for r in sorted(roots) if (out / r).exists()] + [p for p in [out / SUMMARY_FILE] if p.exists()]
    if existing:
        if not cfg.overwrite:
            raise OutputExistsError(f"{existing[0]} already exists; set overwrite = true (or --overwrite) to replace it")
        for p in existing:
            shutil.rmtree(p) if p.is_dir() else p.unlink()

    media = _Tokenized(cfg, image_tokenizer, speech_tokenizer)
    sinks: dict[str, _ShardSink] = {}
    dropped: dict[str, int] = {}
    layout = dataclasses.asdict(cfg.layout)
    try:
        with tqdm(total=total, unit="sample", desc="prepare", mininterval=1.0) as progress:
            for chunk in _chunks(manifests, cfg.records_per_chunk):
                kept = []
                for record in chunk:
                    try:
                        if media.gather(record):
                            kept.append(record)
                        else:
                            dropped[record.data_type] = dropped.get(record.data_type, 0) + 1
                    except (OSError, ValueError) as e:
                        raise MediaError(f"{record.where}: {e}") from None
                media.flush()
                for record in kept:
                    rng = random.Random(f"{cfg.seed}:{_sample_key(record)}")
                    try:
                        doc = encode_sample(_to_sample(record, media), vocab, cfg.encode, rng)
                    except (SampleError, ValueError) as e:
                        raise ManifestError(f"{record.where}: {e}") from None
                    if doc is None:
                        dropped[record.data_type] = dropped.get(record.data_type, 0) + 1
                        continue
                    if doc.data_type not in sinks:
                        sinks[doc.data_type] = _ShardSink(out / doc.data_type, vocab.size, layout, cfg.docs_per_shard)
                    sinks[doc.data_type].append(doc)
                progress.update(len(chunk))
        for sink in sinks.values():
            sink.close()
    except BaseException:
        for sink in sinks.values():
            sink.abort()
        raise

    seconds = time.monotonic() - started
    summary = {
        "records": counts,
        "dropped": dropped,
        "data_types": {
            t: {"docs": s.docs, "tokens": s.tokens, "loss_tokens": s.loss_tokens, "shards": s.shards}
            for t, s in sorted(sinks.items())
        },
        "media": {"images": len(media.images), "videos": len(media.videos), "speech": len(media.speech),
                  "speech_seconds": round(sum(media.speech_seconds.values()), 3)},
        "vocab_size": vocab.size,
        "layout": layout,
        "seconds": round(seconds, 3),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
    log.info(
        "prepared %d documents (%d tokens) from %d records in %.1fs (%.1f records/s); dropped %s; wrote %s",
        sum(s.docs for s in sinks.values()), sum(s.tokens for s in sinks.values()), total, seconds,
        total / max(seconds, 1e-9), dropped or "none", out,
    )
    return summary


def _check_tokenizers(layout: VocabLayout, image_tokenizer, speech_tokenizer) -> None:
    if image_tokenizer is not None and (
        image_tokenizer.codebook_size != layout.image_codebook_size or image_tokenizer.tokens_per_image != layout.tokens_per_image
    ):
        raise ValueError(
            f"image tokenizer has {image_tokenizer.codebook_size} codes x {image_tokenizer.tokens_per_image} per image, "
            f"the layout {layout.image_codebook_size} x {layout.tokens_per_image}"
        )
    if speech_tokenizer is not None and speech_tokenizer.codebook_size != layout.speech_codebook_size:
        raise ValueError(
            f"speech tokenizer has {speech_tokenizer.codebook_size} codes per layer, the layout {layout.speech_codebook_size}"
        )
