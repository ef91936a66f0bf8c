"""The generation engine: batched KV-cache decoding with a per-row modality state machine.

One causal LM writes text, image, video and speech tokens. What keeps its output decodable
is a constraint object per row, applied to the logits OUTSIDE the model's forward
(`ModalityState`): inside `<image>` only image codes are allowed and `</image>` is forced
after exactly `tokens_per_image` codes (a video is a run of image blocks); inside `<spch>`
the content block comes first (the model ends it by writing a timbre-1 code, or `</spch>`
when content-only speech is allowed), then the three timbre blocks, each forced to the
content block's length, then `</spch>`. The caller restricts which modalities may be opened
(voice mode = speech only: the reply must start with `<spch>`).

With `fit_to_budget` (the default) a block is opened only when it can close within
`max_new_tokens`, and a speech content block ends early enough for its timbre blocks to
fit, so every reply is well-formed by construction. Without it, a block cut off by the
limit comes back from `Vocab.parse` as a `Malformed` segment.

Decoding parameters switch with the modality of the token being generated (paper Table 11,
`DecodingConfig`). Beam search applies only when the output is text-only; media use
sampling or greedy decoding per modality. Optional classifier-free guidance (not in the
paper) mixes in an unconditional context for tokens inside media blocks.

`Engine` runs the batch: each sequence owns a slot of a preallocated KV cache
(`mio.decoder`), with its own positions, settings and random generator, so it decodes
exactly as it would alone, and sequences join and leave between steps (continuous
batching, as the server uses it). `generate` and `stream` run a fixed batch through it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch

from mio.decoder import Decoder, Recompute, head_logits
from mio.vocab import Vocab

log = logging.getLogger(__name__)

MODALITIES = ("text", "image", "video", "speech")
LENGTH_PENALTY = 1.0
"""Beam scores are summed log-probabilities divided by generated length ** this (HF's default)."""


MIN_TEMPERATURE = 1e-3
"""Below this, logits divided by the temperature overflow float32 (greedy is do_sample=False)."""
MAX_SEED = 2**63 - 1
"""Seeds are 0..MAX_SEED (a batch adds its offset; torch's generators take 64 bits)."""
MAX_SCALE = 1e6
"""Largest temperature, repetition penalty and guidance scale: far past any useful value,
and small enough for every tensor type the sampler uses."""
MAX_TOP_K = 2**31 - 1
"""Largest top_k (any k above the vocabulary keeps every token)."""
MAX_BEAMS = 64
"""Most beams (each is a copy of the batch's KV cache)."""


class GenerationError(ValueError):
    """Generation cannot run with these inputs or settings; the message says why."""


def check_integer(name: str, value, minimum: int, maximum: int | None = None) -> None:
    """Raise GenerationError unless `value` is an integer (not a bool) in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise GenerationError(f"{name} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise GenerationError(f"{name} must be {bounds}, got {value}")


def check_number(name: str, value, minimum: float, maximum: float = math.inf, open_minimum: bool = False) -> None:
    """Raise GenerationError unless `value` is a finite real number in its range."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise GenerationError(f"{name} must be a finite number, got {value!r}")
    if value < minimum or (open_minimum and value == minimum) or value > maximum:
        low = f"> {minimum}" if open_minimum else f">= {minimum}"
        raise GenerationError(f"{name} must be {low}" + (f" and <= {maximum}" if maximum < math.inf else "")
                              + f", got {value}")


def check_flag(name: str, value) -> None:
    """Raise GenerationError unless `value` is True or False."""
    if not isinstance(value, bool):
        raise GenerationError(f"{name} must be true or false, got {value!r}")


@dataclass
class ModalityDecoding:
    """How tokens of one output modality are chosen."""

    num_beams: int = 1
    """Beams (used for text only, and only when the output is text-only)."""
    do_sample: bool = True
    """Sample from the filtered distribution; False = greedy (argmax)."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens with this much probability (1 = off)."""
    top_k: int = 0
    """Keep only the k most likely tokens (0 = off)."""
    temperature: float = 1.0
    """Logits are divided by this before sampling."""
    repetition_penalty: float = 1.0
    """CTRL-style penalty on tokens already in the sequence (prompt included), as in HF (1 = off)."""

    def validate(self, name: str) -> None:
        """Raise GenerationError naming the first option of the wrong type or out of range."""
        check_integer(f"{name}.num_beams", self.num_beams, 1, MAX_BEAMS)
        check_flag(f"{name}.do_sample", self.do_sample)
        check_number(f"{name}.top_p", self.top_p, 0.0, 1.0, open_minimum=True)
        check_integer(f"{name}.top_k", self.top_k, 0, MAX_TOP_K)
        try:
            check_number(f"{name}.temperature", self.temperature, MIN_TEMPERATURE, MAX_SCALE)
        except GenerationError as e:
            raise GenerationError(f"{e} (use do_sample=False for greedy decoding)") from None
        check_number(f"{name}.repetition_penalty", self.repetition_penalty, 0.0, MAX_SCALE, open_minimum=True)


def _section(**kw) -> ModalityDecoding:
    return field(default_factory=lambda: ModalityDecoding(**kw))


@dataclass
class DecodingConfig:
    """Decoding settings per output modality (defaults: the paper's Table 11) and global limits."""

    text: ModalityDecoding = _section(num_beams=5, do_sample=False)
    """Text: beam search with 5 beams when the output is text-only, else greedy."""
    image: ModalityDecoding = _section(do_sample=True, top_p=0.7)
    """Image codes: nucleus sampling, top-p 0.7."""
    speech: ModalityDecoding = _section(do_sample=True, top_p=0.7, repetition_penalty=1.15)
    """Speech codes: nucleus sampling, top-p 0.7, repetition penalty 1.15."""
    video: ModalityDecoding = _section(do_sample=True, top_p=0.7, repetition_penalty=1.15)
    """Video frames (image blocks that directly follow an image block): top-p 0.7, rep. 1.15."""
    max_new_tokens: int = 512
    """Most tokens generated per reply (the stop token included)."""
    guidance_scale: float = 1.0
    """Classifier-free guidance inside media blocks (1 = off); needs an unconditional context."""
    content_only_speech: bool = False
    """Allow `</spch>` right after the content block (content-only speech has no waveform)."""
    fit_to_budget: bool = True
    """Open a media block only when it can close within max_new_tokens (and end speech
    content early enough for the timbre blocks), so no reply is cut mid-block."""

    def validate(self) -> None:
        """Raise GenerationError naming the first option of the wrong type or out of range."""
        for name in MODALITIES:
            getattr(self, name).validate(name)
        check_integer("max_new_tokens", self.max_new_tokens, 1)
        check_number("guidance_scale", self.guidance_scale, 1.0, MAX_SCALE)
        check_flag("content_only_speech", self.content_only_speech)
        check_flag("fit_to_budget", self.fit_to_budget)

    def section(self, modality: str) -> ModalityDecoding:
        """The settings of one modality."""
        return getattr(self, modality)

    def override(self, **overrides) -> DecodingConfig:
        """A copy with `overrides` applied: global fields directly, per-modality fields
        (temperature, top_p, ...) to all four modalities."""
        per_modality = {f.name for f in dataclasses.fields(ModalityDecoding)}
        top = {f.name for f in dataclasses.fields(self)} - set(MODALITIES)
        unknown = sorted(set(overrides) - per_modality - top)
        if unknown:
            known = ", ".join(sorted(per_modality | top))
            raise GenerationError(f"unknown decoding option {unknown[0]!r} (known: {known})")
        sections = {
            m: dataclasses.replace(self.section(m), **{k: v for k, v in overrides.items() if k in per_modality})
            for m in MODALITIES
        }
        return dataclasses.replace(self, **sections, **{k: v for k, v in overrides.items() if k in top})

    @classmethod
    def greedy(cls, **overrides) -> DecodingConfig:
        """Greedy decoding for every modality (no beams, no sampling, no penalties)."""
        plain = {m: ModalityDecoding(do_sample=False) for m in MODALITIES}
        return dataclasses.replace(cls(), **plain).override(**overrides)


def check_modalities(output_modalities: Iterable[str] | None) -> frozenset[str]:
    """Validate a set of output modalities; None means all of them."""
    if output_modalities is None:
        return frozenset(MODALITIES)
    if isinstance(output_modalities, str):
        output_modalities = [output_modalities]
    chosen = frozenset(output_modalities)
    unknown = sorted(chosen - set(MODALITIES))
    if unknown:
        raise GenerationError(f"unknown output modality {unknown[0]!r} (known: {', '.join(MODALITIES)})")
    if not chosen:
        raise GenerationError("output_modalities is empty; allow at least one of " + ", ".join(MODALITIES))
    return chosen


# ---------------------------------------------------------------- the modality state machine

# A row's allowed next tokens are a union of these parts (speech layer l is "speech_{l}").
TEXT, STOP, OPEN_IMAGE, IMAGE_CODE, CLOSE_IMAGE, OPEN_SPEECH, CLOSE_SPEECH = (
    "text", "stop", "open_image", "image_code", "close_image", "open_speech", "close_speech")


class MaskTable:
    """Boolean vocabulary masks for sets of parts, built once per distinct set and reused."""

    def __init__(self, vocab: Vocab, logits_size: int, stop_ids: Sequence[int], device: torch.device):
        self.vocab, self.size, self.device = vocab, logits_size, device
        self.stop_ids = list(stop_ids)
        self._parts: dict[str, torch.Tensor] = {}
        self._masks: dict[frozenset, torch.Tensor] = {}

    def _part(self, part: str) -> torch.Tensor:
        if part not in self._parts:
            v, m = self.vocab, torch.zeros(self.size, dtype=torch.bool)
            if part == TEXT:
                # Every tokenizer id that is not media and not a stop token; rows past the
                # tokenizer (a padded embedding) are never allowed.
                m[: v.size] = True
                for lo, hi in (v.image_range, v.speech_range):
                    m[lo:hi] = False
                m[list(v.media_special_ids) + self.stop_ids] = False
            elif part == STOP:
                m[self.stop_ids] = True
            elif part == IMAGE_CODE:
                lo, hi = v.image_range
                m[lo:hi] = True
            elif part.startswith("speech_"):
                lo, hi = v.speech_layer_range(int(part.removeprefix("speech_")))
                m[lo:hi] = True
            else:
                token = {OPEN_IMAGE: v.image_start, CLOSE_IMAGE: v.image_end,
                         OPEN_SPEECH: v.speech_start, CLOSE_SPEECH: v.speech_end}[part]
                m[token] = True
            self._parts[part] = m.to(self.device)
        return self._parts[part]

    def mask(self, parts: frozenset) -> torch.Tensor:
        """The [V] mask allowing exactly the tokens of `parts`."""
        if parts not in self._masks:
            m = torch.zeros(self.size, dtype=torch.bool, device=self.device)
            for part in parts:
                m |= self._part(part)
            self._masks[parts] = m
        return self._masks[parts]

    def stack(self, parts: Sequence[frozenset]) -> torch.Tensor:
        """[B, V] masks, one per row."""
        return torch.stack([self.mask(p) for p in parts])


class ModalityState:
    """One row's position in the output grammar: text, an image block, or a speech block.

    `parts()` says which tokens may come next; `advance(token)` moves on. `advance` accepts
    any token (so it can follow unconstrained decoding too, for the per-modality decoding
    parameters); under the constraint the tokens always follow the grammar."""

    def __init__(self, vocab: Vocab, allowed: frozenset[str], max_new_tokens: int,
                 content_only_speech: bool = False, fit_to_budget: bool = True):
        self.vocab, self.allowed = vocab, allowed
        self.max_new_tokens, self.content_only_speech, self.fit = max_new_tokens, content_only_speech, fit_to_budget
        self.generated = 0
        self.block: str | None = None  # None (text), "image" or "speech"
        self.image_left = 0
        self.video_block = False  # the open image block continues a run of image blocks
        self.frames_in_run = 0  # image blocks closed back to back, up to the last token
        self.speech_layer = 0
        self.speech_count = 0  # codes written in the current speech layer
        self.speech_length = 0  # length of the content block, fixed once timbre starts
        self.blocks_done = 0
        self._image_block = 2 + vocab.layout.tokens_per_image
        self._layers = vocab.layout.speech_layers

    @property
    def budget(self) -> int:
        """Tokens that may still be generated, the next one included."""
        return self.max_new_tokens - self.generated

    def _fits(self, tokens: int) -> bool:
        return not self.fit or self.budget >= tokens

    @property
    def modality(self) -> str:
        """Whose decoding parameters the next token uses."""
        if self.block == "image":
            return "video" if self.video_block else "image"
        return self.block or "text"

    @property
    def in_media(self) -> bool:
        return self.block is not None

    def parts(self) -> frozenset:
        """The parts of the vocabulary the next token may come from."""
        if self.block == "image":
            return frozenset({IMAGE_CODE if self.image_left > 0 else CLOSE_IMAGE})
        if self.block == "speech":
            return self._speech_parts()
        return self._text_parts()

    def _text_parts(self) -> frozenset:
        allowed, parts = self.allowed, set()
        image, video = "image" in allowed, "video" in allowed
        after_image = self.frames_in_run > 0
        if video and not image:
            # Video only: a run needs two frames to be a video, so the first frame is opened
            # only if two fit, and the second is forced.
            if after_image and self.frames_in_run == 1:
                return frozenset({OPEN_IMAGE})
            if self._fits(self._image_block * (1 if after_image else 2)):
                parts.add(OPEN_IMAGE)
        elif image and (video or not after_image) and self._fits(self._image_block):
            # Image without video: no block right after another (that would read as a video).
            parts.add(OPEN_IMAGE)
        if "speech" in allowed and self._fits(3 if self.content_only_speech else 2 + self._layers):
            parts.add(OPEN_SPEECH)
        if "text" in allowed:
            parts.add(TEXT)
        if "text" in allowed or self.blocks_done or not parts:
            parts.add(STOP)
        return frozenset(parts)

    def _speech_parts(self) -> frozenset:
        layer, count, last = self.speech_layer, self.speech_count, self._layers - 1
        if layer == 0:
            if count == 0:
                return frozenset({"speech_0"})
            parts = set()
            # Another content code, if the timbre blocks of the longer block still fit.
            if self._fits(1 + last * (count + 1) + 1) or (self.content_only_speech and self._fits(2)):
                parts.add("speech_0")
            if self._fits(last * count + 1):
                parts.add("speech_1")
            if self.content_only_speech:
                parts.add(CLOSE_SPEECH)
            return frozenset(parts or {"speech_1"})
        if count < self.speech_length:
            return frozenset({f"speech_{layer}"})
        return frozenset({f"speech_{layer + 1}" if layer < last else CLOSE_SPEECH})

    def advance(self, token: int) -> None:
        """Record the generated `token`."""
        v = self.vocab
        self.generated += 1
        if self.block == "image":
            if token == v.image_end:
                self.block, self.blocks_done, self.frames_in_run = None, self.blocks_done + 1, self.frames_in_run + 1
            else:
                self.image_left -= 1
            return
        if self.block == "speech":
            if token == v.speech_end:
                self.block, self.blocks_done = None, self.blocks_done + 1
                return
            lo, hi = v.speech_range
            layer = (token - lo) // v.layout.speech_codebook_size if lo <= token < hi else self.speech_layer
            if layer == self.speech_layer:
                self.speech_count += 1
            else:
                if self.speech_layer == 0:
                    self.speech_length = self.speech_count
                self.speech_layer, self.speech_count = layer, 1
            return
        if token == v.image_start:
            self.block, self.image_left = "image", v.layout.tokens_per_image
            self.video_block = self.frames_in_run > 0 or ("video" in self.allowed and "image" not in self.allowed)
            return
        self.frames_in_run = 0
        if token == v.speech_start:
            self.block, self.speech_layer, self.speech_count, self.speech_length = "speech", 0, 0, 0

# ---------------------------------------------------------------- logits processing


def _apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalties: list[float]) -> torch.Tensor:
    """HF's rule, per row: seen tokens' positive logits are divided by the penalty, negative
    ones multiplied."""
    if all(p == 1.0 for p in penalties):  # the common case (text, image) costs nothing
        return logits
    penalty = torch.tensor(penalties, device=logits.device)[:, None]
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen & (penalty != 1.0), penalized, logits)


def _filter_top_k_top_p(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Per-row top-k (0 = off) and nucleus (1 = off) filtering; the best token always survives."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    ranks = torch.arange(logits.shape[-1], device=logits.device)
    k = torch.where(top_k > 0, top_k, logits.shape[-1])
    remove = ranks[None] >= k[:, None]
    probs = sorted_logits.softmax(-1)
    remove |= (probs.cumsum(-1) - probs) > top_p[:, None]
    sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def _seen_mask(prompts: Sequence[Sequence[int]], size: int, device: torch.device) -> torch.Tensor:
    seen = torch.zeros(len(prompts), size, dtype=torch.bool, device=device)
    for i, p in enumerate(prompts):
        seen[i, torch.tensor(list(p), dtype=torch.long, device=device)] = True
    return seen

# ---------------------------------------------------------------- the engine: a batch of sequences that changes


SPAN_GAP = 64
"""Allowed vocabulary columns closer than this share one LM-head matmul (a separate call
costs more than computing a few dozen unused columns)."""


def allowed_spans(allowed: torch.Tensor) -> list[tuple[int, int]]:
    """[lo, hi) column ranges covering every True of a [V] mask (runs closer than SPAN_GAP merged)."""
    index = allowed.nonzero().squeeze(1)
    if len(index) == 0:
        return []
    gap = (index[1:] - index[:-1]) > SPAN_GAP
    yes = torch.ones(1, dtype=torch.bool, device=index.device)
    starts, ends = index[torch.cat([yes, gap])], index[torch.cat([gap, yes])] + 1
    return list(zip(starts.tolist(), ends.tolist()))


@dataclass(eq=False)
class Row:
    """One sequence being decoded: its cache slot (and guidance slot), grammar state, settings
    and random stream. `finish_reason` is set when it ends: "stop" (a stop token, or nothing
    may follow), "length" (its token budget) or "cancelled"."""

    slot: int
    uncond_slot: int | None
    state: ModalityState
    decoding: DecodingConfig
    table: MaskTable
    stop_ids: frozenset[int]
    constrain: bool
    generator: torch.Generator
    prompt_tokens: int
    finish_reason: str | None = None

    @property
    def guided(self) -> bool:
        return self.uncond_slot is not None


class Engine:
    """Decodes many sequences at once, one token each per `step`. Sequences join with `add`
    (their prompts prefilled into free cache slots) and leave when it finishes or is
    `remove`d, between any two steps: continuous batching. Each row decodes as it would
    alone: its own positions and cache, decoding settings, grammar and random generator."""

    def __init__(self, model, vocab: Vocab, slots: int, capacity: int, use_cache: bool = True):
        self.model, self.vocab = model, vocab
        self.decoder = Decoder(model, slots, capacity) if use_cache else Recompute(model, slots, vocab.pad_id)
        self.capacity = capacity
        self.size = model.get_output_embeddings().weight.shape[0]
        device = next(model.parameters()).device
        self.hidden = torch.zeros(slots, model.config.hidden_size, dtype=next(model.parameters()).dtype, device=device)
        self.seen = torch.zeros(slots, self.size, dtype=torch.bool, device=device)
        self.free_slots = list(range(slots))
        self.rows: list[Row] = []
        self._tables: dict[frozenset[int], MaskTable] = {}

    @property
    def device(self) -> torch.device:
        return self.hidden.device

    def slots_needed(self, request: GenerationRequest) -> int:
        """Free slots `add` takes for `request` (two per prompt with guidance)."""
        return len(request.prompts) * (2 if request.decoding.guidance_scale > 1.0 else 1)

    def check(self, request: GenerationRequest) -> list[int]:
        """Raise GenerationError unless `request` can decode here; its prompts' token budgets."""
        _validate(request)
        budgets = _budgets(self.model, request)
        guided = request.decoding.guidance_scale > 1.0
        for i, budget in enumerate(budgets):
            for ids in (request.prompts[i], request.uncond_prompts[i]) if guided else (request.prompts[i],):
                if len(ids) + budget > self.capacity:
                    raise GenerationError(f"prompt {i}: {len(ids)} tokens + {budget} new tokens do not fit the "
                                          f"engine's {self.capacity} positions")
        return budgets

    @torch.inference_mode()
    def add(self, requests: Sequence[GenerationRequest]) -> list[list[Row]]:
        """Start decoding every prompt of every request (each checked, clamped to its
        context; prompt i of a request seeded `seed + i`), all prompts prefilled in one
        forward. Needs `slots_needed` free slots for each. Sampling or greedy per modality:
        beams are `generate`'s. The rows of each request, in order."""
        if not requests:
            return []
        budgets = [self.check(r) for r in requests]
        needed = sum(self.slots_needed(r) for r in requests)
        if needed > len(self.free_slots):
            raise GenerationError(f"{needed} cache slots needed, {len(self.free_slots)} free "
                                  f"({len(self.rows)} sequences running)")
        out, slots, prompts = [], [], []
        for request, request_budgets in zip(requests, budgets):
            stops = frozenset(request.stop_ids)
            if stops not in self._tables:
                self._tables[stops] = MaskTable(self.vocab, self.size, sorted(stops), self.device)
            cfg, guided = request.decoding, request.decoding.guidance_scale > 1.0
            rows = []
            for i, (prompt, budget) in enumerate(zip(request.prompts, request_budgets)):
                generator = torch.Generator(device=self.device)
                seed = _row_seed(request.seed, i)
                if seed is None:
                    generator.seed()  # a fresh random seed for this generator only (the global RNG is untouched)
                else:
                    generator.manual_seed(seed)
                contexts = [prompt] + ([request.uncond_prompts[i]] if guided else [])
                taken = [self.free_slots.pop(0) for _ in contexts]
                slots += taken
                prompts += contexts
                state = ModalityState(self.vocab, request.output_modalities, budget, cfg.content_only_speech,
                                      cfg.fit_to_budget)
                rows.append(Row(taken[0], taken[1] if guided else None, state, cfg, self._tables[stops], stops,
                                request.constrain, generator, len(prompt)))
                self.seen[taken[0], torch.tensor(list(prompt), dtype=torch.long, device=self.device)] = True
            out.append(rows)
        try:
            self.hidden[torch.tensor(slots, device=self.device)] = self.decoder.prefill(slots, prompts)
        except BaseException:
            for slot in slots:  # nothing of these requests starts: their slots are free again
                self.decoder.free(slot)
                self.seen[slot] = False
            self.free_slots = sorted(self.free_slots + slots)
            raise
        self.rows = sorted(self.rows + [row for rows in out for row in rows], key=lambda r: r.slot)
        return out

    @torch.inference_mode()
    def remove(self, row: Row, reason: str = "cancelled") -> None:
        """Stop decoding `row` and free its slots."""
        if row in self.rows:
            self.rows.remove(row)
            row.finish_reason = row.finish_reason or reason
            for slot in (row.slot, row.uncond_slot):
                if slot is not None:
                    self.decoder.free(slot)
                    self.seen[slot] = False
                    self.free_slots.append(slot)
            self.free_slots.sort()

    @torch.inference_mode()
    def step(self) -> list[tuple[Row, int | None]]:
        """One token for every running row: (row, token), token None when the row stopped
        without one (stop tokens are not returned). Finished rows leave the engine."""
        rows = list(self.rows)
        if not rows:
            return []
        n, device = len(rows), self.device
        cond = torch.tensor([r.slot for r in rows], device=device)
        guided = [i for i, r in enumerate(rows) if r.guided]
        parts = [r.state.parts() for r in rows]
        allowed = torch.stack([r.table.mask(p) for r, p in zip(rows, parts)])
        # The head computes only the columns some row may write (all of them if one row is free).
        spans = allowed_spans(allowed.any(0)) if all(r.constrain for r in rows) else None
        slots = torch.cat([cond, torch.tensor([rows[i].uncond_slot for i in guided], dtype=torch.long, device=device)])
        logits = head_logits(self.model, self.hidden[slots], spans)
        in_media = torch.tensor([r.state.in_media for r in rows], device=device)
        if guided:
            g = torch.tensor(guided, device=device)
            c, u = logits[g].log_softmax(-1), logits[n:].log_softmax(-1)
            scale = torch.tensor([rows[i].decoding.guidance_scale for i in guided], device=device)[:, None]
            logits[g] = torch.where(in_media[g, None], u + scale * (c - u), logits[g])
        logits = logits[:n]
        sections = [r.decoding.section(r.state.modality) for r in rows]
        logits = _apply_repetition_penalty(logits, self.seen[cond], [c.repetition_penalty for c in sections])
        constrained = torch.tensor([r.constrain for r in rows], device=device)
        logits = logits.masked_fill(~allowed & constrained[:, None], float("-inf"))
        ended = (~allowed.any(-1) & constrained).tolist()  # nothing may follow (e.g. no stop tokens): the row ends
        tokens = logits.argmax(-1)
        sample = [i for i, c in enumerate(sections) if c.do_sample and not ended[i]]
        if sample:
            s = torch.tensor(sample, device=device)
            picked = logits[s] / torch.tensor([sections[i].temperature for i in sample], device=device)[:, None]
            picked = _filter_top_k_top_p(picked, torch.tensor([sections[i].top_k for i in sample], device=device),
                                         torch.tensor([sections[i].top_p for i in sample], device=device))
            probs = picked.softmax(-1)
            tokens[s] = torch.stack([torch.multinomial(probs[j], 1, generator=rows[i].generator)[0]
                                     for j, i in enumerate(sample)])
        out: list[tuple[Row, int | None]] = []
        go_on: list[tuple[int, int]] = []  # (slot, token) of rows that continue
        for i, (row, token) in enumerate(zip(rows, tokens.tolist())):
            if ended[i]:
                out.append((row, None))
                self.remove(row, "stop")
                continue
            row.state.advance(token)
            self.seen[row.slot, token] = True
            if token in row.stop_ids:
                out.append((row, None))
                self.remove(row, "stop")
                continue
            out.append((row, token))
            if row.state.budget <= 0:
                self.remove(row, "length")
                continue
            go_on += [(row.slot, token)] + ([(row.uncond_slot, token)] if row.guided else [])
        if go_on:
            go_on.sort()
            step_slots = torch.tensor([s for s, _ in go_on], device=device)
            self.hidden[step_slots] = self.decoder.step(step_slots, torch.tensor([t for _, t in go_on], device=device))
        return out
# ---------------------------------------------------------------- entry points


@dataclass
class GenerationRequest:
    """Everything the engine needs besides the model: prompts and how to decode them."""

    prompts: list[list[int]]
    output_modalities: frozenset[str] = frozenset(MODALITIES)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    stop_ids: tuple[int, ...] = ()
    """Tokens that end a reply (not returned). Empty: always run max_new_tokens."""
    uncond_prompts: list[list[int]] | None = None
    """Unconditional contexts for classifier-free guidance (one per prompt)."""
    seed: int | None = None
    max_context: int | None = None
    """Longest sequence (prompt + reply) the model takes; None: its max_position_embeddings."""
    constrain: bool = True
    """Apply the modality state machine (False only for measurements and tests)."""
    use_cache: bool = True
    """Decode with the KV cache (False recomputes the whole sequence every step)."""


def _budgets(model, request: GenerationRequest) -> list[int]:
    """Per-row max_new_tokens after the context limit; raises when a prompt does not fit."""
    if not request.prompts:
        raise GenerationError("no prompts to generate from")
    context = request.max_context or model.config.max_position_embeddings
    longest = [len(p) for p in request.prompts]
    if request.decoding.guidance_scale > 1.0:  # the unconditional rows decode alongside and must fit too
        longest = [max(n, len(u)) for n, u in zip(longest, request.uncond_prompts)]
    budgets = []
    for i, n in enumerate(longest):
        if not request.prompts[i]:
            raise GenerationError(f"prompt {i} is empty")
        if n >= context:
            raise GenerationError(f"prompt {i} is {n} tokens long; the model's context is {context} tokens, "
                                  "which leaves no room to generate")
        budget = min(request.decoding.max_new_tokens, context - n)
        if budget < request.decoding.max_new_tokens:
            log.warning("prompt %d: %d tokens + max_new_tokens %d exceed the context of %d; generating at most %d",
                        i, n, request.decoding.max_new_tokens, context, budget)
        budgets.append(budget)
    return budgets


def _validate(request: GenerationRequest) -> None:
    request.decoding.validate()
    if request.seed is not None:
        check_integer("seed", request.seed, 0, MAX_SEED)
    if request.uncond_prompts is not None and len(request.uncond_prompts) != len(request.prompts):
        raise GenerationError(f"{len(request.uncond_prompts)} unconditional prompts for {len(request.prompts)} prompts")
    if request.decoding.guidance_scale > 1.0 and request.uncond_prompts is None:
        raise GenerationError("guidance_scale > 1 needs unconditional prompts (uncond_prompts)")


def uses_beam_search(request: GenerationRequest) -> bool:
    """Beam search runs only for text-only output with more than one text beam."""
    return request.output_modalities == frozenset({"text"}) and request.decoding.text.num_beams > 1


def generate(model, vocab: Vocab, request: GenerationRequest) -> list[list[int]]:
    """Generate a reply for every prompt; returns the new ids of each (stop token excluded)."""
    _validate(request)
    if uses_beam_search(request):
        return _beam_search(model, vocab, request)
    replies: list[list[int]] = [[] for _ in request.prompts]
    for step in stream(model, vocab, request):
        for row, token in enumerate(step):
            if token is not None:
                replies[row].append(token)
    return replies



def _row_seed(seed: int | None, row: int) -> int | None:
    """Row `row`'s seed in a batch seeded with `seed` (each row has its own generator)."""
    return None if seed is None else (seed + row) % (MAX_SEED + 1)


@torch.inference_mode()
def stream(model, vocab: Vocab, request: GenerationRequest) -> Iterator[list[int | None]]:
    """Decode step by step (sampling or greedy per modality, never beams); yields each step's
    new token per row, None for rows that have finished. Stop tokens are not yielded. Row i
    samples from its own generator, seeded `seed + i`, so it decodes as it would alone."""
    _validate(request)
    n, guided = len(request.prompts), request.decoding.guidance_scale > 1.0
    contexts = request.prompts + (request.uncond_prompts if guided else [])
    capacity = max(len(p) for p in contexts) + max(_budgets(model, request))
    engine = Engine(model, vocab, len(contexts), capacity, request.use_cache)
    (rows,) = engine.add([request])
    index = {row: i for i, row in enumerate(rows)}
    while engine.rows:
        step: list[int | None] = [None] * n
        for row, token in engine.step():
            step[index[row]] = token
        yield step


@torch.inference_mode()
def _beam_search(model, vocab: Vocab, request: GenerationRequest) -> list[list[int]]:
    """Text-only beam search (no sampling), `num_beams` cache slots per prompt."""
    cfg = request.decoding.text
    k, n = cfg.num_beams, len(request.prompts)
    budgets = _budgets(model, request)
    device = next(model.parameters()).device
    capacity = max(len(p) for p in request.prompts) + max(budgets)
    decoder = Decoder(model, n * k, capacity) if request.use_cache else Recompute(model, n * k, vocab.pad_id)
    first = [r * k for r in range(n)]  # each prompt is prefilled once, then copied to its other beams
    hidden = decoder.prefill(first, request.prompts)
    copies = torch.tensor([r * k for r in range(n) for _ in range(k)], device=device)
    decoder.reorder(copies)
    hidden = hidden.repeat_interleave(k, dim=0)
    size = model.get_output_embeddings().weight.shape[0]
    text_only = MaskTable(vocab, size, request.stop_ids, device).mask(frozenset({TEXT, STOP}))
    spans = allowed_spans(text_only) if request.constrain else None
    seen = _seen_mask([p for p in request.prompts for _ in range(k)], size, device)
    penalty = [cfg.repetition_penalty] * (n * k)
    scores = torch.zeros(n, k, device=device)
    scores[:, 1:] = float("-inf")  # all beams start identical: expand only the first
    beams: list[list[list[int]]] = [[[] for _ in range(k)] for _ in range(n)]
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(n)]
    done = [False] * n
    every_slot = torch.arange(n * k, device=device)

    for step in range(max(budgets)):
        logits = _apply_repetition_penalty(head_logits(model, hidden, spans), seen, penalty)
        if request.constrain:
            logits = logits.masked_fill(~text_only, float("-inf"))
        logp = logits.log_softmax(-1).view(n, k, size) + scores[:, :, None]
        top_scores, top_index = logp.view(n, k * size).topk(2 * k, dim=-1)
        top_scores, top_index = top_scores.tolist(), top_index.tolist()
        source, tokens, new_scores = [], [], []
        for row in range(n):
            alive: list[tuple[float, int, int]] = []
            if not done[row]:
                for rank, (score, index) in enumerate(zip(top_scores[row], top_index[row])):
                    beam, token = divmod(index, size)
                    if score == float("-inf"):
                        break
                    if token in request.stop_ids:
                        if rank < k:  # a stop only counts if it is among the k best candidates
                            finished[row].append((score / (step + 1) ** LENGTH_PENALTY, beams[row][beam]))
                    else:
                        alive.append((score, beam, token))
                    if len(alive) == k:
                        break
                done[row] = _beam_row_done(finished[row], alive, k, step + 1, budgets[row])
                if done[row]:
                    finished[row] += [(s / (step + 1) ** LENGTH_PENALTY, beams[row][b] + [t]) for s, b, t in alive]
            alive += [(float("-inf"), 0, vocab.pad_id)] * (k - len(alive))  # placeholders keep k rows
            beams[row] = [beams[row][b] + [t] for _, b, t in alive]
            source += [row * k + b for _, b, _ in alive]
            tokens += [t for _, _, t in alive]
            new_scores.append([s for s, _, _ in alive])
        if all(done):
            break
        index = torch.tensor(source, device=device)
        token_tensor = torch.tensor(tokens, device=device)
        decoder.reorder(index)
        seen = seen[index]
        seen[every_slot, token_tensor] = True
        scores = torch.tensor(new_scores, device=device)
        hidden = decoder.step(every_slot, token_tensor)
    return [max(f, key=lambda hyp: hyp[0])[1] if f else [] for f in finished]


def _beam_row_done(finished: list, alive: list, k: int, length: int, budget: int) -> bool:
    """A prompt is done at its token budget, when nothing is alive, or (HF's heuristic)
    when it has k finished hypotheses and the best live beam cannot beat the worst."""
    if length >= budget or not alive:
        return True
    if len(finished) < k:
        return False
    return max(s for s, _, _ in alive) / length ** LENGTH_PENALTY <= min(s for s, _ in finished)
