"""The Python API: load a run directory, chat or complete with any mix of modalities.

    from mio.api import MIO, save_segments
    from mio.segments import Image, Speech
    mio = MIO.from_pretrained("runs/sft")
    reply = mio.chat([{"role": "user", "content": [Image(image="cat.png"), "What is this?"]}])
    save_segments(reply, "out", "reply_000")   # out/reply_000_text.txt, _image_00.png, ...

Inputs are segments (`mio.segments`): `Text` (or a plain string), `Image` with a PIL image,
a path or codes, `Video` with frames (Images) or a path in `frames`, `Speech` with a
waveform and its rate, a path in `wave`, or codes. Raw media are tokenized here with the
run's image and speech tokenizers. Replies come back de-tokenized: `Image` with codes and a
PIL image, `Video` with such frames, `Speech` with codes [4, T], a waveform and its rate;
a block the model got wrong comes back as `Malformed`.

Generation is `mio.generate` (the engine); this module turns messages into prompt ids and
reply ids back into media.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image as PILImage
from transformers import AutoModelForCausalLM

from mio.data.encode import encode_prompt
from mio.device import resolve_device
from mio.generate import MAX_SEED, DecodingConfig, GenerationRequest, check_integer, check_modalities, generate, stream
from mio.media.audio import AudioError, load_audio
from mio.media.content_parts import segment_from_part
from mio.media.image import open_image
from mio.media.video import DEFAULT_FRAME_SIZE, MIN_FRAMES, read_video, select_frames
from mio.released import IMAGE_DECODER_DIR, IMAGE_TOKENIZER_DIR, SPEECH_TOKENIZER_DIR
from mio.segments import ROLES, Image, Malformed, Message, Segment, Speech, Text, Video
from mio.templates import MODES
from mio.tokenizers.base import ImageTokenizer, SpeechTokenizer, load_tokenizer
from mio.tokenizers.text import load_text_tokenizer
from mio.train.checkpoint import RUN_FILE
from mio.vocab import StreamParser, Vocab, VocabLayout

log = logging.getLogger(__name__)

# Ours, then the released MIO-7B layout's (`mio.released`).
IMAGE_TOKENIZER_DIRS = ("image_tokenizer", IMAGE_TOKENIZER_DIR)
SPEECH_TOKENIZER_DIRS = ("speech_tokenizer", SPEECH_TOKENIZER_DIR)


class InputError(ValueError):
    """A message, segment or media file cannot be used; the message says which and why."""


def infer_layout(tokenizer, image_tokenizer=None, speech_tokenizer=None) -> VocabLayout:
    """The media layout from the tokenizer's `<img{i}>` / `<spch{i}>` tokens (for run
    directories without run.json, e.g. a released checkpoint); tokens per image and speech
    layers come from the media tokenizers when present, else the paper's values."""
    vocab = tokenizer.get_vocab()
    images = sum(1 for t in vocab if re.fullmatch(r"<img\d+>", t))
    speech = sum(1 for t in vocab if re.fullmatch(r"<spch\d+>", t))
    if not images or not speech:
        raise InputError("the text tokenizer has no <img..> / <spch..> tokens and there is no run.json with a layout")
    paper = VocabLayout()
    layers = paper.speech_layers
    if speech_tokenizer is not None:
        layers = speech // speech_tokenizer.codebook_size
    tokens_per_image = image_tokenizer.tokens_per_image if image_tokenizer is not None else paper.tokens_per_image
    return VocabLayout(image_codebook_size=images, tokens_per_image=tokens_per_image,
                       speech_codebook_size=speech // layers, speech_layers=layers)


# ---------------------------------------------------------------- media files -> segments


def load_image(path: str | Path) -> Image:
    """An image file as an `Image` segment (raises `ImageFileError`, a ValueError)."""
    return Image(image=open_image(path))


def load_video(path: str | Path, num_frames: int = MIN_FRAMES, frame_size: int = DEFAULT_FRAME_SIZE) -> Video:
    """A video file as a `Video` of `num_frames` uniformly spaced frames (raises `VideoFileError`)."""
    clip = read_video(path, max_side=max(frame_size * 2, 64))
    return Video(frames=[Image(image=f) for f in select_frames(clip, num_frames, frame_size)])


def load_speech(path: str | Path) -> Speech:
    """An audio file (any rate; the speech tokenizer resamples) as a `Speech` segment."""
    if not Path(path).is_file():
        raise AudioError(f"{path}: audio file not found")
    wave, rate = load_audio(path)
    return Speech(wave=wave, sample_rate=rate)


# ---------------------------------------------------------------- the model


class MIO:
    """A loaded MIO: the LM, its vocabulary, and the image and speech tokenizers."""

    def __init__(self, model, vocab: Vocab, image_tokenizer=None, speech_tokenizer=None,
                 context_length: int | None = None):
        self.model = model.eval()
        self.vocab = vocab
        self.image_tokenizer = image_tokenizer
        self.speech_tokenizer = speech_tokenizer
        self.context_length = context_length or model.config.max_position_embeddings
        layout = vocab.layout
        rows = model.get_output_embeddings().weight.shape[0]
        if rows < vocab.size:
            raise InputError(f"the model has {rows} output rows but the tokenizer has {vocab.size} tokens")
        if image_tokenizer is not None and (image_tokenizer.codebook_size, image_tokenizer.tokens_per_image) != (
                layout.image_codebook_size, layout.tokens_per_image):
            raise InputError(
                f"image tokenizer ({image_tokenizer.codebook_size} codes, "
                f"{image_tokenizer.tokens_per_image} per image) "
                f"does not match the layout ({layout.image_codebook_size} codes, {layout.tokens_per_image} per image)")
        if speech_tokenizer is not None and speech_tokenizer.codebook_size != layout.speech_codebook_size:
            raise InputError(f"speech tokenizer has {speech_tokenizer.codebook_size} codes per layer, "
                             f"the layout {layout.speech_codebook_size}")

    @property
    def device(self) -> torch.device:
        return self.model.device

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "auto") -> MIO:
        """Load a run directory: HF model + text tokenizer, `image_tokenizer/` and
        `speech_tokenizer/`, and the layout from run.json's config (inferred from the
        tokenizer when run.json is absent); or a released MIO-7B directory (`mio.released`):
        `seed-tokenizer-2/` with the unCLIP decoder of `stable-diffusion-2-1-unclip/` (with the
        `diffusion` extra installed; without it generated images stay codes) and `SpeechTokenizer/`."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"model directory not found: {path}")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a model directory: it has no config.json")
        device = resolve_device(device)
        tokenizer = load_text_tokenizer(path)
        image_tokenizer = _load_media_tokenizer(path, IMAGE_TOKENIZER_DIRS, ImageTokenizer, device)
        speech_tokenizer = _load_media_tokenizer(path, SPEECH_TOKENIZER_DIRS, SpeechTokenizer)
        config = _run_config(path)
        if "layout" in config:
            layout = VocabLayout(**config["layout"])
        else:
            layout = infer_layout(tokenizer, image_tokenizer, speech_tokenizer)
            log.info("no layout in %s; inferred %s from the tokenizer", path / RUN_FILE, layout)
        model = _load_model(path).to(device)
        return cls(model, Vocab(tokenizer, layout), image_tokenizer, speech_tokenizer, config.get("context_length"))

    # ---- inputs

    def tokenize(self, segments: Sequence[Segment | str | PILImage.Image]) -> list[Segment]:
        """Segments with codes: strings become `Text`, PIL images `Image`, OpenAI-style content
        parts (`mio.media.content_parts`) their segments, paths are read,
        raw media are tokenized (images in one batch; codes are stored on the given `Image`
        objects, so a chat history is tokenized once), `Malformed` segments (e.g. from an
        earlier reply) are dropped."""
        out: list[Segment] = []
        for seg in segments:
            if isinstance(seg, dict):
                seg = segment_from_part(seg)
            if isinstance(seg, str):
                seg = Text(seg)
            elif isinstance(seg, PILImage.Image):
                seg = Image(image=seg)
            elif isinstance(seg, Image) and isinstance(seg.image, (str, Path)) and seg.codes is None:
                seg = load_image(seg.image)
            elif isinstance(seg, Video) and isinstance(seg.frames, (str, Path)):
                size = getattr(self.image_tokenizer, "image_size", DEFAULT_FRAME_SIZE)
                seg = load_video(seg.frames, frame_size=size)
            elif isinstance(seg, Video):
                seg = Video(frames=[Image(image=f) if isinstance(f, PILImage.Image) else f for f in seg.frames])
            elif isinstance(seg, Speech):
                seg = self._speech_codes(seg)
            elif isinstance(seg, Malformed):
                log.warning("dropping a malformed %s block from the input (%s)", seg.modality, seg.reason)
                continue
            elif not isinstance(seg, (Text, Image)):
                raise InputError(f"cannot use a {type(seg).__name__} as message content")
            out.append(seg)
        self._image_codes(out)
        return out

    def _image_codes(self, segments: list[Segment]) -> None:
        """Fill in codes of all images (and video frames) that have pixels only, in one batch."""
        if any(isinstance(s, Video) and not s.frames for s in segments):
            raise InputError("a video has no frames")
        images = [i for i in _images_in(segments) if i.codes is None]
        if any(not isinstance(i.image, PILImage.Image) for i in images):
            raise InputError("an Image needs a PIL image, a path or codes")
        if not images:
            return
        if self.image_tokenizer is None:
            raise InputError("this model has no image tokenizer; give images as Image(codes=...)")
        for image, codes in zip(images, self.image_tokenizer.encode([i.image for i in images])):
            image.codes = codes

    def _speech_codes(self, seg: Speech) -> Speech:
        if seg.codes is not None:
            return seg
        if isinstance(seg.wave, (str, Path)):
            seg = load_speech(seg.wave)
        if seg.wave is None or seg.sample_rate is None:
            raise InputError("a Speech needs a waveform and its sample_rate, a path, or codes")
        if self.speech_tokenizer is None:
            raise InputError("this model has no speech tokenizer; give speech as Speech(codes=...)")
        return Speech(codes=self.speech_tokenizer.encode(seg.wave, seg.sample_rate), wave=seg.wave,
                      sample_rate=seg.sample_rate)

    def _messages(self, messages: Sequence[Message | dict], mode: str) -> list[Message]:
        if mode not in MODES:
            raise InputError(f"unknown chat mode {mode!r}; modes are {', '.join(MODES)}")
        if isinstance(messages, (str, bytes, dict, Message)) or not isinstance(messages, Sequence):
            raise InputError(f"messages must be a list of messages (dicts with 'role' and 'content'), "
                             f"got a {type(messages).__name__}")
        if not messages:
            raise InputError("a chat needs at least one message")
        out = []
        for k, m in enumerate(messages):
            if isinstance(m, dict):
                if set(m) - {"role", "content"} or "role" not in m or "content" not in m:
                    raise InputError(f"message {k}: a message is a dict with keys 'role' and 'content', got {sorted(m)}")
                if m["role"] not in ROLES:
                    raise InputError(f"message {k}: role must be one of {', '.join(ROLES)}, got {m['role']!r}")
                m = Message(m["role"], m["content"])
            elif not isinstance(m, Message):
                raise InputError(f"message {k}: a message is a dict with 'role' and 'content', got a {type(m).__name__}")
            content = [m.content] if isinstance(m.content, str) else m.content
            if isinstance(content, (dict, bytes)) or not isinstance(content, Sequence):
                raise InputError(f"message {k}: content must be a string or a list of parts, "
                                 f"got a {type(m.content).__name__}")
            out.append(Message(m.role, self.tokenize(content)))
        if out[-1].role != "user":
            raise InputError(f"the last message must be the user's, got {out[-1].role!r}")
        return out

    def chat_prompt(self, messages: Sequence[Message | dict], mode: str = "std") -> list[int]:
        """The prompt ids of a chat (BOS, system prompt of `mode`, turns, generation prompt)."""
        return encode_prompt(self._messages(messages, mode), self.vocab, mode)

    def _unconditional_chat(self, messages: list[Message], mode: str) -> list[int]:
        """The guidance context: the same chat with every user turn emptied."""
        return encode_prompt([Message(m.role, "" if m.role == "user" else m.content) for m in messages],
                             self.vocab, mode)

    def complete_prompt(self, segments: Sequence[Segment | str] | str) -> list[int]:
        """BOS + the raw sequence (speech as content-only input, as in the ASR template)."""
        segments = self.tokenize([segments] if isinstance(segments, str) else segments)
        if not segments:
            raise InputError("an empty prompt; give some text or media to continue")
        ids = [self.vocab.bos_id] if self.vocab.bos_id is not None else []
        text = ""
        for seg in segments:  # adjacent texts are encoded as one run, like the rendered string
            if isinstance(seg, Text):
                text += seg.text
                continue
            ids += self.vocab.encode_text(text) + self.vocab.segment_ids(seg, speech_timbre=False)
            text = ""
        return ids + self.vocab.encode_text(text)

    # ---- generation

    def _request(self, prompts: list[list[int]], uncond: list[list[int]], stop_ids: Iterable[int],
                 output_modalities, decoding: DecodingConfig | None, seed: int | None,
                 overrides: dict) -> GenerationRequest:
        cfg = (decoding or DecodingConfig()).override(**overrides)
        cfg.validate()
        if seed is not None:
            check_integer("seed", seed, 0, MAX_SEED)
        return GenerationRequest(
            prompts=prompts, output_modalities=check_modalities(output_modalities), decoding=cfg,
            stop_ids=tuple(dict.fromkeys(i for i in stop_ids if i is not None)),
            uncond_prompts=uncond if cfg.guidance_scale > 1.0 else None, seed=seed, max_context=self.context_length)

    def _run(self, request: GenerationRequest, batch_size: int) -> list[list[Segment]]:
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        replies: list[list[int]] = []
        for start in range(0, len(request.prompts), batch_size):
            chunk = slice(start, start + batch_size)
            replies += generate(self.model, self.vocab, dataclasses.replace(
                request, prompts=request.prompts[chunk],
                uncond_prompts=request.uncond_prompts[chunk] if request.uncond_prompts else None,
                seed=None if request.seed is None else (request.seed + start) % (MAX_SEED + 1)))
        video = "video" in request.output_modalities
        return [self.detokenize(self.vocab.parse(ids, video=video)) for ids in replies]

    def chat(self, messages: Sequence[Message | dict], mode: str = "std", output_modalities=None,
             decoding: DecodingConfig | None = None, seed: int | None = None, **overrides) -> list[Segment]:
        """Reply to a chat. `mode`: std | voice (speech-only reply) | custom (the first
        message is the system prompt). `output_modalities`: None (voice mode: speech;
        otherwise any) or a subset of text, image, video, speech. `overrides` (e.g.
        max_new_tokens, temperature, guidance_scale) apply to every modality."""
        return self.chat_batch([messages], mode, output_modalities, decoding, seed, **overrides)[0]

    def chat_batch(self, conversations: Sequence[Sequence[Message | dict]], mode: str = "std",
                   output_modalities=None, decoding: DecodingConfig | None = None, seed: int | None = None,
                   batch_size: int = 8, **overrides) -> list[list[Segment]]:
        """`chat` for many conversations, decoded `batch_size` at a time. Conversation i samples
        from its own generator, seeded `seed + i`: its reply does not depend on the batch."""
        if output_modalities is None and mode == "voice":
            output_modalities = {"speech"}
        if not conversations:
            return []
        chats = [self._messages(c, mode) for c in conversations]
        prompts = [encode_prompt(c, self.vocab, mode) for c in chats]
        uncond = [self._unconditional_chat(c, mode) for c in chats]
        request = self._request(prompts, uncond, (self.vocab.im_end, self.vocab.eos_id), output_modalities,
                                decoding, seed, overrides)
        return self._run(request, batch_size)

    def complete(self, segments: Sequence[Segment | str] | str, output_modalities=None,
                 decoding: DecodingConfig | None = None, seed: int | None = None, **overrides) -> list[Segment]:
        """Continue a raw multimodal sequence with the base model (e.g. an Appendix B template:
        "Please generate an image of ``a red circle'': "); stops at EOS."""
        return self.complete_batch([segments], output_modalities, decoding, seed, **overrides)[0]

    def complete_batch(self, prompts: Sequence[Sequence[Segment | str] | str], output_modalities=None,
                       decoding: DecodingConfig | None = None, seed: int | None = None, batch_size: int = 8,
                       **overrides) -> list[list[Segment]]:
        """`complete` for many prompts, decoded `batch_size` at a time."""
        if not prompts:
            return []
        ids = [self.complete_prompt(p) for p in prompts]
        uncond = [[self.vocab.bos_id] if self.vocab.bos_id is not None else ids[0][:1]] * len(ids)
        request = self._request(ids, uncond, (self.vocab.eos_id,), output_modalities, decoding, seed, overrides)
        return self._run(request, batch_size)

    def chat_request(self, messages: Sequence[Message | dict], mode: str = "std", output_modalities=None,
                     decoding: DecodingConfig | None = None, seed: int | None = None,
                     **overrides) -> GenerationRequest:
        """The engine's request for one chat (its media tokenized, its settings checked): what
        `stream_chat` decodes, and what a server hands to its `Engine`."""
        if output_modalities is None and mode == "voice":
            output_modalities = {"speech"}
        chat = self._messages(messages, mode)
        return self._request([encode_prompt(chat, self.vocab, mode)], [self._unconditional_chat(chat, mode)],
                             (self.vocab.im_end, self.vocab.eos_id), output_modalities, decoding, seed, overrides)

    def stream_chat(self, messages: Sequence[Message | dict], mode: str = "std", output_modalities=None,
                    decoding: DecodingConfig | None = None, seed: int | None = None,
                    **overrides) -> Iterator[Segment]:
        """`chat`, streamed: yields `Text` pieces as they are generated and each media segment
        (de-tokenized) when it closes; a video when its run of frames ends. Text is decoded
        greedily or sampled per the config, never with beams."""
        request = self.chat_request(messages, mode, output_modalities, decoding, seed, **overrides)
        parser = StreamParser(self.vocab, video="video" in request.output_modalities)
        for step in stream(self.model, self.vocab, request):
            if step[0] is not None:
                yield from (self.detokenize([s])[0] for s in parser.feed(step[0]))
        yield from (self.detokenize([s])[0] for s in parser.close())

    # ---- outputs

    def detokenize(self, segments: list[Segment]) -> list[Segment]:
        """Add PIL images to image codes (one batch) and waveforms to speech codes, in place.
        Media stay codes-only when the run has no tokenizer for them."""
        images = [i for i in _images_in(segments) if i.image is None and i.codes is not None]
        if images and self.image_tokenizer is None:
            log.warning("no image tokenizer: %d generated images are returned as codes only", len(images))
        elif images and not getattr(self.image_tokenizer, "can_decode", True):
            log.warning("the image tokenizer has no decoder: %d generated images are returned as codes only", len(images))
        elif images:
            for image, pil in zip(images, self.image_tokenizer.decode(torch.stack([i.codes for i in images]))):
                image.image = pil
        for seg in segments:
            if not isinstance(seg, Speech) or seg.wave is not None or seg.codes is None:
                continue
            if self.speech_tokenizer is None:
                log.warning("no speech tokenizer: generated speech is returned as codes only")
            elif seg.codes.shape[0] != self.vocab.layout.speech_layers:
                log.warning("content-only speech (%d frames) has no timbre codes; returned as codes only",
                            seg.codes.shape[1])
            else:
                seg.wave, seg.sample_rate = self.speech_tokenizer.decode(seg.codes)
        return segments


def _images_in(segments: Sequence[Segment]) -> list[Image]:
    """The images of `segments`, video frames included, in order."""
    return [i for s in segments for i in (s.frames if isinstance(s, Video) else [s] if isinstance(s, Image) else [])]


def _run_config(path: Path) -> dict:
    """The training config recorded in run.json ({} when there is none)."""
    if not (path / RUN_FILE).is_file():
        return {}
    try:
        run = json.loads((path / RUN_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path / RUN_FILE}: not valid JSON ({e})") from None
    config = run.get("config", {}) if isinstance(run, dict) else None
    if not isinstance(config, dict):
        raise InputError(f"{path / RUN_FILE}: expected an object with a 'config' object")
    return config


def _load_model(path: Path):
    """The LM's weights, refusing a checkpoint that lacks any of the model's tensors (the
    library would fill them with random values and only log it)."""
    try:
        model, info = AutoModelForCausalLM.from_pretrained(str(path), output_loading_info=True)
    except Exception as e:  # safetensors, torch and transformers each raise their own kinds
        raise InputError(f"{path}: cannot load the model weights ({type(e).__name__}: {e})") from None
    tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()
    missing = sorted(set(info["missing_keys"]) - tied)
    if missing:
        raise InputError(f"{path}: the weights lack {len(missing)} of the model's tensors (first: {missing[0]}); "
                         "the checkpoint is incomplete")
    return model


def _load_media_tokenizer(path: Path, names: Sequence[str], protocol: type, device: torch.device | None = None):
    kind = "image" if protocol is ImageTokenizer else "speech"
    for name in names:
        if name == IMAGE_TOKENIZER_DIR and (path / name).is_dir():  # SEED's codes decode through unCLIP
            return load_tokenizer(path / name, protocol, decoder=_load_image_decoder(path, device)).to(device)
        if (path / name).is_dir():
            return load_tokenizer(path / name, protocol)
    log.warning("%s has no %s tokenizer (%s); %s inputs need codes and outputs stay codes",
                path, kind, " or ".join(names), kind)
    return None


def _load_image_decoder(path: Path, device: torch.device | None):
    """The released model's unCLIP decoder, or None (generated images then stay codes)."""
    folder = path / IMAGE_DECODER_DIR
    if not folder.is_dir():
        log.warning("%s has no %s/: generated images are returned as codes", path, IMAGE_DECODER_DIR)
        return None
    try:
        from mio.tokenizers.unclip_decoder import UnclipDecoder

        return UnclipDecoder.load(folder, device=device or "cpu")
    except ImportError as e:
        log.warning("%s; generated images are returned as codes", e)
        return None


# ---------------------------------------------------------------- writing replies


SAFE_PREFIX = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")
"""The file name stems `save_segments` writes under (no separators, no leading dot)."""


def file_stem(name: str) -> str:
    """`name` as a file name stem `save_segments` accepts: other characters become `_`."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", str(name))[:200]
    return "_" + stem[1:] if stem.startswith(".") else stem or "_"


def save_segments(segments: Sequence[Segment], out_dir: str | Path, prefix: str = "reply_000",
                  video_format: str = "gif") -> list[Path]:
    """Write a reply's text and media to `out_dir`: `{prefix}_text.txt`,
    `{prefix}_image_{k:02d}.png`, `{prefix}_video_{k:02d}.gif` (or .mp4),
    `{prefix}_speech_{k:02d}.wav`, k counting segments of that kind. Malformed blocks and
    media without pixels or waveform are skipped with a warning. Returns the written paths."""
    import soundfile as sf

    from mio.media.video import write_gif, write_mp4

    if video_format not in ("gif", "mp4"):
        raise InputError(f"video_format must be 'gif' or 'mp4', got {video_format!r}")
    if not SAFE_PREFIX.fullmatch(prefix):  # a prefix is a file name stem, never a path
        raise InputError(f"file prefix {prefix!r} must be letters, digits, '.', '_' or '-' and not start with '.'")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir} is a file, not a folder for the reply's files")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    text = "".join(s.text for s in segments if isinstance(s, Text))
    if text:
        written.append(out_dir / f"{prefix}_text.txt")
        written[-1].write_text(text)
    counts = {"image": 0, "video": 0, "speech": 0}
    for seg in segments:
        if isinstance(seg, Malformed):
            log.warning("%s: skipping a malformed %s block (%s)", prefix, seg.modality, seg.reason)
            continue
        kind = {Image: "image", Video: "video", Speech: "speech"}.get(type(seg))
        if kind is None:
            continue
        k, counts[kind] = counts[kind], counts[kind] + 1
        if kind == "image" and seg.image is not None:
            path = out_dir / f"{prefix}_image_{k:02d}.png"
            seg.image.save(path)
        elif kind == "video" and seg.frames and all(f.image is not None for f in seg.frames):
            path = out_dir / f"{prefix}_video_{k:02d}.{video_format}"
            (write_gif if video_format == "gif" else write_mp4)([f.image for f in seg.frames], path)
        elif kind == "speech" and seg.wave is not None:
            path = out_dir / f"{prefix}_speech_{k:02d}.wav"
            sf.write(str(path), seg.wave.detach().cpu().float().numpy(), seg.sample_rate)
        else:
            log.warning("%s: %s %d has codes only (no tokenizer to decode it); not written", prefix, kind, k)
            continue
        written.append(path)
    return written
