"""Why generation is hard, measured: how predictable the media codes are from their text,
and how consistently the tokenizers code the same content.

Understanding asks the model for a few words; generation asks it for every code of a
picture (`tokens_per_image`) or of an utterance (four layers x T frames), and a reply is right
only when those codes decode to the right content. Two things make that hard, and this module
measures both on a trained demo:

- **Entropy floors.** `code_losses` scores the model's cross-entropy of each code of the
  target medium given its text, through the same encoder the training data went through
  (`mio.data.encode`, the generation direction of a pre-training pair for a base checkpoint,
  the SFT chat for an instruction-tuned one). Scored on training items and on held-out test
  items: a gap between the two says memorisation; a high loss on both says the codes are
  not predictable from the text (the text does not say what the codes encode). A control
  scores the same training targets after the text of another item
  (`train_other_text`): where it is no worse, the model does not read the text at all.
- **The copy or the change.** `edit_copy` scores image edits under teacher forcing: an edit
  mostly keeps the source picture's codes, and whether the model's most likely code is right
  where a code is kept (an empty cell, an object the edit leaves alone) or changed says
  whether the copy or the edit is what a wrong picture gets wrong.
- **Tokenizer consistency.** `image_consistency` and `speech_consistency` tokenize the same
  content under different nuisance (another background tint and jitter; another voice) and
  report the share of identical codes: whatever changes with the nuisance is something a
  caption cannot tell the model.

`diagnose` runs all of it on a demo's world and checkpoints; `mio demo` writes the result
to `DIR/diagnosis.json` and the report shows it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from mio import config as config_lib
from mio.api import MIO
from mio.data.encode import EncodeConfig, Encoded, Sample, encode_sample
from mio.data.manifest import MediaRef, Record, read_manifest
from mio.data.packing import collate_rows
from mio.eval.harness import world_image_size
from mio.model import forward_logits, token_losses
from mio.segments import Image, Message, Segment, Speech, Text
from mio.toyworld.scenes import GRID, Scene, caption, render
from mio.toyworld.speech_synth import DEFAULT_SAMPLE_RATE, Voice, synthesize
from mio.toyworld.tasks import scene_from_json
from mio.toyworld.world import WorldConfig, split_voices

log = logging.getLogger(__name__)

DIAGNOSIS_FILE = "diagnosis.json"
DEFAULT_ITEMS = 64
"""Items per set (training, held-out) whose code losses are measured."""
SCORE_BATCH = 8
"""Documents per forward pass when scoring (one per row, padded to the longest)."""
CONSISTENCY_SCENES = 64
"""Held-out scenes rendered twice for the image consistency."""
CONSISTENCY_SENTENCES = 16
"""Sentences spoken twice for the speech consistency."""
PITCH_STEP = 20
"""How far the pitch of the `other_pitch` voice moves (eSpeak's 0..100 scale), wrapping
around inside that scale."""
MAX_PITCH = 100
"""eSpeak's highest pitch."""
SYNTH_SEED = 0
"""eSpeak seed of the consistency utterances (eSpeak as the world drives it is deterministic:
the same text, voice and any seed give the same samples)."""
SPEECH_COMPARISON = "frame by frame over the shorter utterance of each pair, without alignment"

# Where each checkpoint kind reads its items: (training manifest, held-out suite).
IMAGE_SOURCES = {True: ("pretrain/image_text_pair.jsonl", "image_generation"),
                 False: ("sft/image_generation.jsonl", "image_generation")}
SPEECH_SOURCES = {True: ("pretrain/speech_text_pair.jsonl", "tts"), False: ("sft/tts.jsonl", "tts")}
# A base checkpoint is asked for a held-out item through the pre-training pair of this type,
# with this truth field as its text (what `mio.eval.suites` prompts the base model with).
HELDOUT_PAIRS = {"image_generation": ("image_text_pair", "caption"), "tts": ("speech_text_pair", "text")}


# ---------------------------------------------------------------- items

def _segment(part: str | MediaRef) -> Segment:
    """A manifest part as a segment the API tokenizes (media by path)."""
    if isinstance(part, str):
        return Text(part)
    if part.kind == "image":
        return Image(image=part.paths[0])
    if part.kind == "speech":
        return Speech(wave=part.paths[0])
    raise ValueError(f"a diagnosis item holds images and speech, not {part.kind}")


def _tokenized(mio, parts: list[str | MediaRef]) -> list[Segment]:
    return mio.tokenize([_segment(p) for p in parts])


def _record_sample(mio, record: Record) -> Sample:
    """A manifest record as a `Sample` with codes, as `mio prepare` builds it."""
    if record.data_type == "sft":
        messages = [Message(role, content if isinstance(content, str) else _tokenized(mio, content))
                    for role, content in record.messages]
        return Sample("sft", messages=messages, mode=record.mode, task=record.task)
    return Sample(record.data_type, segments=_tokenized(mio, record.segments))


def manifest_samples(mio, manifest: str | Path, limit: int) -> list[Sample]:
    """The first `limit` records of a manifest (pre-training pairs or SFT chats) as samples,
    their media tokenized with the model's own tokenizers."""
    samples = []
    for record in read_manifest(manifest):
        if len(samples) >= limit:
            break
        samples.append(_record_sample(mio, record))
    return samples


def heldout_pair_samples(mio, world: str | Path, suite: str, limit: int) -> list[Sample]:
    """A generation suite's first `limit` test items as pre-training pairs (for a base
    checkpoint): the reference medium with the item's text from its truth file."""
    data_type, field = HELDOUT_PAIRS[suite]
    eval_dir = Path(world) / "eval"
    truths = [json.loads(line) for line in (eval_dir / f"{suite}.truth.jsonl").read_text().splitlines() if line.strip()]
    samples = []
    for record, truth in zip(read_manifest(eval_dir / f"{suite}.jsonl"), truths):
        if len(samples) >= limit:
            break
        role, content = record.messages[-1]
        if role != "assistant" or isinstance(content, str):
            raise ValueError(f"{record.where}: the test item has no reference medium")
        medium = _tokenized(mio, [p for p in content if isinstance(p, MediaRef)][:1])
        samples.append(Sample(data_type, segments=[*medium, Text(truth[field])]))
    return samples


def with_other_text(samples: list[Sample]) -> list[Sample]:
    """The same targets, each after the text of the next sample (cyclically): the prompt of a
    chat (every turn before the last), or the text segment of a pre-training pair."""
    out = []
    for k, sample in enumerate(samples):
        other = samples[(k + 1) % len(samples)]
        if sample.data_type == "sft":
            out.append(dataclasses.replace(sample, messages=other.messages[:-1] + sample.messages[-1:]))
        else:
            text = next(s for s in other.segments if isinstance(s, Text))
            out.append(dataclasses.replace(sample, segments=[text if isinstance(s, Text) else s for s in sample.segments]))
    return out


# ---------------------------------------------------------------- scoring

@dataclass
class ScoredDocument:
    """Per-token losses (nats) of one scored document."""

    target: list[float]
    """Each code of the target medium block (the last media block), in order, delimiters excluded."""
    prompt: list[float]
    """The prompt's text tokens: the template and its text (pre-training pair), or the user
    turn (chat), BOS and chat specials excluded."""


def generation_encoding(mio) -> EncodeConfig:
    """The encoder's settings with every pair in the generation direction (text first, then
    the medium), the way `mio prepare` writes half of the pairs."""
    frame_rate = getattr(mio.speech_tokenizer, "frame_rate", None) or EncodeConfig().speech_frame_rate
    return EncodeConfig(caption_probability=0.0, asr_probability=0.0, speech_frame_rate=frame_rate)


def target_span(ids: list[int], vocab) -> tuple[int, int]:
    """[start, end) positions of the codes of the last media block in `ids`."""
    starts = [k for k, t in enumerate(ids) if t in (vocab.image_start, vocab.speech_start)]
    if not starts:
        raise ValueError("the document has no media block")
    start = starts[-1]
    close = vocab.image_end if ids[start] == vocab.image_start else vocab.speech_end
    end = ids.index(close, start)
    return start + 1, end


def prompt_positions(ids: list[int], vocab, media_start: int) -> range:
    """Positions of the prompt's text before the media block that starts at `media_start`:
    the user turn (after its `<|im_start|>`, before its `<|im_end|>`) of a chat, everything
    after BOS of a pre-training document."""
    turns = [k for k in range(media_start) if ids[k] == vocab.im_start]
    if len(turns) < 2:  # a pre-training document: the first token (BOS) is never predicted
        return range(1, media_start)
    user = turns[-2]  # the last turn before the assistant's
    return range(user + 1, ids.index(vocab.im_end, user))


def encoded_documents(mio, samples: list[Sample], keep=None) -> list[tuple[int, Encoded]]:
    """Samples encoded in the generation direction with a loss target on every token (so that
    the prompt, which has none in SFT, is scored too), as (sample index, document), shortest
    first. Left out: samples longer than the model's context, those the encoder drops (its
    speech-length rule), and those whose ids fail `keep`."""
    vocab, cfg = mio.vocab, generation_encoding(mio)
    docs = []
    for k, sample in enumerate(samples):
        # The config fixes the direction; the generator is drawn from but decides nothing.
        encoded = encode_sample(sample, vocab, cfg, random.Random(0))
        if encoded is not None and len(encoded) <= mio.context_length and (keep is None or keep(encoded.ids)):
            docs.append((k, Encoded(encoded.ids, [True] * len(encoded), encoded.data_type)))
    docs.sort(key=lambda d: len(d[1]))  # batches of similar lengths waste less on padding
    return docs


def document_batches(mio, docs: list[tuple[int, Encoded]]):
    """Yield (chunk of `docs`, their padded batch on the model's device), `SCORE_BATCH` at a time."""
    for first in range(0, len(docs), SCORE_BATCH):
        chunk = docs[first:first + SCORE_BATCH]
        yield chunk, collate_rows([[d] for _, d in chunk], max(len(d) for _, d in chunk), mio.vocab.pad_id).to(mio.device)


@torch.inference_mode()
def score_documents(mio, samples: list[Sample]) -> tuple[list[ScoredDocument], int]:
    """Encode samples in the generation direction and score every token with the model.
    Returns the scored documents, shortest first, and how many samples were left out (see
    `encoded_documents`)."""
    docs = encoded_documents(mio, samples)
    scored = []
    for chunk, batch in document_batches(mio, docs):
        losses = token_losses(mio.model, batch).cpu()  # losses[r, p] scores the token at p + 1
        for row, (_, doc) in zip(losses.tolist(), chunk):
            start, end = target_span(doc.ids, mio.vocab)
            prompt = prompt_positions(doc.ids, mio.vocab, start - 1)
            scored.append(ScoredDocument([row[p - 1] for p in range(start, end)], [row[p - 1] for p in prompt]))
    return scored, len(samples) - len(docs)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def position_means(scored: list[ScoredDocument], positions: int) -> list[float | None]:
    """Mean loss of each of the `positions` target codes over documents."""
    return [_mean([d.target[p] for d in scored if len(d.target) == positions]) for p in range(positions)]


def layer_means(scored: list[ScoredDocument], layers: int) -> list[float | None]:
    """Mean loss of the codes of each speech layer (the target is `layers` equal blocks in
    order: content, then timbre-1..), over all frames of all documents."""
    out = []
    for layer in range(layers):
        values = []
        for d in scored:
            frames = len(d.target) // layers
            values += d.target[layer * frames:(layer + 1) * frames]
        out.append(_mean(values))
    return out


def _code_loss(mio, train: list[Sample], heldout: list[Sample], summary, codebook_size: int) -> dict:
    """Scores of the three sets (`train`, `heldout`, `train_other_text`), each summarised by
    `summary(scored)` and as one mean over every code, with counts and references."""
    result: dict = {"uniform": math.log(codebook_size), "n": {}, "left_out": {}, "prompt_text_loss": {}}
    for name, samples in (("train", train), ("heldout", heldout), ("train_other_text", with_other_text(train))):
        scored, left_out = score_documents(mio, samples)
        result[name] = summary(scored)
        result[f"{name}_mean"] = _mean([x for d in scored for x in d.target])
        result["n"][name], result["left_out"][name] = len(scored), left_out
        if name != "train_other_text":  # the same prompts as `train`, in another order
            result["prompt_text_loss"][name] = _mean([x for d in scored for x in d.prompt])
    return result


def image_code_loss(mio, train: list[Sample], heldout: list[Sample]) -> dict:
    """Per code position, the model's mean loss of the image codes given the text, on
    training and held-out samples, and on the training targets after another item's text
    (`train_other_text`); each also as one mean (`train_mean`, ...); with the prompt text's
    loss (`prompt_text_loss`) and the loss of a uniform guess, ln(codebook size), for reference."""
    layout = mio.vocab.layout
    return _code_loss(mio, train, heldout, lambda scored: position_means(scored, layout.tokens_per_image),
                      layout.image_codebook_size)


def speech_code_loss(mio, train: list[Sample], heldout: list[Sample]) -> dict:
    """Per speech layer (1 content, 2-4 timbre), the model's mean loss of the spoken reply's
    codes given the text, on the same three sets and with the same references as
    `image_code_loss`."""
    layout = mio.vocab.layout
    return _code_loss(mio, train, heldout, lambda scored: layer_means(scored, layout.speech_layers),
                      layout.speech_codebook_size)


def code_losses(mio, world: str | Path, base: bool, limit: int = DEFAULT_ITEMS) -> dict:
    """`image_code_loss` and `speech_code_loss` of one checkpoint on a world's first `limit`
    training items and test items: a base checkpoint (`base`) on the pre-training pairs with
    the generation templates, an instruction-tuned one on the SFT chats of image generation
    and TTS; both on the `image_generation` and `tts` test items."""
    world = Path(world)

    def sets(sources: dict) -> tuple[list[Sample], list[Sample]]:
        manifest, suite = sources[base]
        train = manifest_samples(mio, world / manifest, limit)
        if base:
            heldout = heldout_pair_samples(mio, world, suite, limit)
        else:
            heldout = manifest_samples(mio, world / "eval" / f"{suite}.jsonl", limit)
        return train, heldout

    return {"image_code_loss": image_code_loss(mio, *sets(IMAGE_SOURCES)),
            "speech_code_loss": speech_code_loss(mio, *sets(SPEECH_SOURCES))}


# ---------------------------------------------------------------- image editing: copy or change

EDIT_SOURCES = ("sft/image_editing.jsonl", "image_editing")
"""Image editing's training manifest and test suite (an instruction-tuned checkpoint only)."""
EDIT_CLASSES = ("kept_common", "kept_rare", "kept_unseen", "changed")


@dataclass
class EditCodes:
    """One edit scored under teacher forcing: the codes of the source picture and of the
    edited one, and at each edited code the model's most likely code and its loss (nats)."""

    source: list[int]
    target: list[int]
    predicted: list[int]
    losses: list[float]
    item: int
    """Index of the sample the edit came from."""


@torch.inference_mode()
def score_edits(mio, samples: list[Sample]) -> list[EditCodes]:
    """Encode edit chats (the source picture in the prompt, the edited one as the reply) and
    score every code of the reply given the codes before it. Samples whose chat holds fewer
    than two pictures, or that exceed the context, are left out."""
    vocab = mio.vocab
    docs = encoded_documents(mio, samples, keep=lambda ids: ids.count(vocab.image_start) >= 2)
    out = []
    for chunk, batch in document_batches(mio, docs):
        logits = forward_logits(mio.model, batch).float()
        for row, (k, doc) in enumerate(chunk):
            start, end = target_span(doc.ids, vocab)
            # The source is the picture before the reply's.
            source_start = [p for p, t in enumerate(doc.ids[:start - 1]) if t == vocab.image_start][-1] + 1
            target = doc.ids[start:end]
            log_probs = torch.log_softmax(logits[row, start - 1:end - 1], dim=-1)
            out.append(EditCodes(source=doc.ids[source_start:source_start + len(target)], target=target,
                                 predicted=log_probs.argmax(-1).tolist(),
                                 losses=(-log_probs[torch.arange(len(target)), target]).tolist(), item=k))
    return out


def _class_of(k: int, e: EditCodes, common: list[int], cells: list[int] | None, unseen: set[int]) -> str:
    if e.target[k] != e.source[k]:
        return "changed"
    if e.source[k] == common[k]:
        return "kept_common"
    return "kept_unseen" if cells is not None and cells[k] in unseen else "kept_rare"


def edit_class_stats(edits: list[EditCodes], common: list[int], cells: list[int] | None,
                 unseen: dict[int, set[int]]) -> dict:
    """Scored edits summarised per class of edited code (`EDIT_CLASSES`, see `edit_copy`):
    count, the share the model's most likely code gets right, and the mean loss; with
    `changed_predicted_source`, `all_codes_right` and `items`. `common`: the usual code of
    each position; `cells`: each position's grid cell (`code_cells`) or None; `unseen`: item
    -> the cells of its source's objects of a held-out colour-shape combination."""
    sums = {c: [0, 0, 0.0] for c in EDIT_CLASSES}
    changed_as_source = 0
    for e in edits:
        for k, (src, tgt, pred, loss) in enumerate(zip(e.source, e.target, e.predicted, e.losses)):
            cls = _class_of(k, e, common, cells, unseen.get(e.item, set()))
            s = sums[cls]
            s[0], s[1], s[2] = s[0] + 1, s[1] + (pred == tgt), s[2] + loss
            changed_as_source += cls == "changed" and pred == src
    out: dict = {c: {"n": n, "accuracy": right / n if n else None, "loss": loss / n if n else None}
                 for c, (n, right, loss) in sums.items()}
    n_changed = sums["changed"][0]
    out["changed_predicted_source"] = changed_as_source / n_changed if n_changed else None
    out["items"] = len(edits)
    out["all_codes_right"] = _mean([float(e.predicted == e.target) for e in edits])
    return out


def code_cells(image_tokenizer) -> list[int] | None:
    """The grid cell of each image token position, for a tokenizer that codes the cells of
    the toy world's grid apart (`share_regions`, cells numbered row by row, in its stream
    order); None for any other tokenizer."""
    cfg = getattr(image_tokenizer, "config", None)
    if not getattr(cfg, "share_regions", False):
        return None
    return (image_tokenizer.stream_order // (cfg.tokens_per_image // cfg.num_regions)).tolist()


def _unseen_cells(truth: dict, combos: set[tuple[str, str]]) -> set[int]:
    """Cells of the source picture's objects whose colour-shape combination is held out."""
    return {row * GRID + col for shape, colour, _, row, col in truth["source"]["objects"] if (colour, shape) in combos}


def edit_copy(mio, world: str | Path, limit: int = DEFAULT_ITEMS) -> dict:
    """What an edit gets wrong, under teacher forcing: for each code of the edited picture,
    whether the model's most likely code is right, by class (`EDIT_CLASSES`) -- `kept_common`
    (kept from the source and the code most sources have there: an empty cell of the toy
    world), `kept_rare` (kept: the objects the edit leaves alone), `kept_unseen` (kept, of a
    test source's object whose colour-shape combination was never drawn in training, where
    the tokenizer codes grid cells apart: a model that writes a shape from the colour before
    it, and not from the source, misses those), `changed` (the edit itself;
    `changed_predicted_source`: the share where the model copies the source's code instead)
    -- on the first `limit` training edits and test edits. `all_codes_right`: the share of
    edits whose every code is the model's most likely one."""
    world = Path(world)
    manifest, suite = EDIT_SOURCES
    train = score_edits(mio, manifest_samples(mio, world / manifest, limit))
    heldout = score_edits(mio, manifest_samples(mio, world / "eval" / f"{suite}.jsonl", limit))
    everything = train + heldout
    common = [max(set(col), key=col.count) for col in zip(*(e.source for e in everything))] if everything else []
    truths = [json.loads(line) for line in (world / "eval" / f"{suite}.truth.jsonl").read_text().splitlines()
              if line.strip()][:limit]
    combos = {tuple(c.split()) for c in json.loads((world / "world.json").read_text())["heldout_combos"]}
    unseen = {k: _unseen_cells(truth, combos) for k, truth in enumerate(truths)}
    cells = code_cells(mio.image_tokenizer)
    return {"train": edit_class_stats(train, common, cells, {}), "heldout": edit_class_stats(heldout, common, cells, unseen)}

# ---------------------------------------------------------------- tokenizer consistency

def share_equal(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Per row of two code tensors [rows, T] / [rows, T'], the share of equal codes over the
    first min(T, T') columns."""
    frames = min(a.shape[-1], b.shape[-1])
    if frames == 0:
        return [0.0] * a.shape[0]
    return (a[:, :frames] == b[:, :frames]).double().mean(dim=-1).tolist()


def renuisanced(scenes: list[Scene]) -> list[Scene]:
    """Each scene with the background tint and jitter seed of the next one (cyclically):
    the same objects under other nuisance."""
    return [dataclasses.replace(s, background=scenes[(k + 1) % len(scenes)].background,
                                jitter_seed=scenes[(k + 1) % len(scenes)].jitter_seed)
            for k, s in enumerate(scenes)]


def image_consistency(image_tokenizer, scenes: list[Scene], image_size: int) -> dict:
    """Share of identical image codes, per position and overall, between each scene's render
    and a render of the same objects with another background tint and jitter."""
    first = image_tokenizer.encode([render(s, image_size) for s in scenes])
    again = image_tokenizer.encode([render(s, image_size) for s in renuisanced(scenes)])
    per_position = (first == again).double().mean(dim=0)
    return {"overall": per_position.mean().item(), "per_position": per_position.tolist(), "n": len(scenes),
            "source": "diagnosis"}


def tokenizer_image_consistency(metrics: dict) -> dict | None:
    """The image tokenizer's own consistency probe from its metrics.json, in this module's
    shape ({overall, per_position, jitter_only, tint_only, ...}); None when it has none.
    Accepts a nested `consistency` object or the flat keys `consistency`,
    `consistency_per_position`, `consistency_jitter`, `consistency_tint`."""
    entry = metrics.get("consistency")
    if entry is None:
        return None
    if isinstance(entry, dict):
        out = dict(entry)
    else:
        out = {"overall": entry, "per_position": metrics.get("consistency_per_position"),
               "jitter_only": metrics.get("consistency_jitter"), "tint_only": metrics.get("consistency_tint")}
    for key in ("codes_changed_per_object_change", "cell_information_share"):
        if key in metrics:
            out[key] = metrics[key]
    return {**out, "source": "image tokenizer metrics.json"}


def other_pitch(voice: Voice) -> Voice:
    """The same accent, variant and rate at another pitch."""
    return dataclasses.replace(voice, pitch=(voice.pitch + PITCH_STEP) % (MAX_PITCH + 1))


def other_voice(voice: Voice, other: Voice) -> Voice:
    """`other`'s accent, variant and pitch at `voice`'s rate (so both say a sentence in about
    the same time)."""
    return dataclasses.replace(other, rate=voice.rate)


def speech_consistency(speech_tokenizer, sentences: list[str], voices: list[Voice]) -> dict:
    """Share of identical speech codes per layer between two renditions of each sentence:
    the same voice twice (`same_voice`: eSpeak is deterministic, so this checks the encoder),
    the same voice at another pitch (`other_pitch`: same timing, frames aligned), and another
    training voice at the same rate (`other_voice`: timing differs, frames not aligned).
    Sentence k is spoken by voices[k] and compared with voices[k + 1] for `other_voice`."""
    if len(voices) < 2:
        raise ValueError("speech consistency needs at least two voices")
    pairs = {"same_voice": lambda v, _: v, "other_pitch": lambda v, _: other_pitch(v), "other_voice": other_voice}
    shares: dict[str, list[list[float]]] = {name: [] for name in pairs}
    for k, sentence in enumerate(sentences):
        voice, next_voice = voices[k % len(voices)], voices[(k + 1) % len(voices)]
        codes = speech_tokenizer.encode(synthesize(sentence, voice, DEFAULT_SAMPLE_RATE, SYNTH_SEED), DEFAULT_SAMPLE_RATE)
        for name, make in pairs.items():
            again = make(voice, next_voice)
            other = speech_tokenizer.encode(synthesize(sentence, again, DEFAULT_SAMPLE_RATE, SYNTH_SEED),
                                            DEFAULT_SAMPLE_RATE)
            shares[name].append(share_equal(codes, other))
    per_layer = {name: [_mean(list(layer)) for layer in zip(*values)] for name, values in shares.items()}
    return {**per_layer, "n": len(sentences), "compared": SPEECH_COMPARISON}


# ---------------------------------------------------------------- the whole diagnosis

def _truth_scenes(world: Path, limit: int) -> list[Scene]:
    path = world / "eval" / "image_generation.truth.jsonl"
    lines = [line for line in path.read_text().splitlines() if line.strip()][:limit]
    return [scene_from_json(json.loads(line)["scene"]) for line in lines]


def _training_voices(world: Path) -> list[Voice]:
    config = json.loads((world / "world.json").read_text())["config"]
    return split_voices(config_lib.load(WorldConfig, config))[0]


def diagnose(world: str | Path, checkpoints: dict[str, tuple[str | Path, bool]], limit: int = DEFAULT_ITEMS,
             image_tokenizer_metrics: dict | None = None, device: str = "auto") -> dict:
    """Code losses of every checkpoint (name -> (run directory, is it a base checkpoint))
    on a built world, and the consistency of the last checkpoint's media tokenizers: the
    image tokenizer's own probe from `image_tokenizer_metrics` when it has one, measured here
    on the world's held-out scenes otherwise. Returns what `mio demo` saves as
    `diagnosis.json`: `{"checkpoints": {NAME: {"run", "image_code_loss", "speech_code_loss"}},
    "consistency": {"image", "speech"}, "items", "seconds"}`."""
    world = Path(world)
    started = time.monotonic()
    result: dict = {"checkpoints": {}, "items": limit}
    mio = None
    for name, (run_dir, base) in checkpoints.items():
        mio = MIO.from_pretrained(run_dir, device=device)
        result["checkpoints"][name] = {"run": str(run_dir), "base": base, **code_losses(mio, world, base, limit)}
        if not base:  # editing is taught in SFT only
            result["checkpoints"][name]["edit_copy"] = edit_copy(mio, world, limit)
        losses = result["checkpoints"][name]
        log.info("%s: mean code loss (train / held-out): image %s / %s, speech %s / %s", name,
                 losses["image_code_loss"]["train_mean"], losses["image_code_loss"]["heldout_mean"],
                 losses["speech_code_loss"]["train_mean"], losses["speech_code_loss"]["heldout_mean"])
    if mio is None:
        raise ValueError("diagnose: name at least one checkpoint")
    image = tokenizer_image_consistency(image_tokenizer_metrics or {})
    if image is None:
        image = image_consistency(mio.image_tokenizer, _truth_scenes(world, CONSISTENCY_SCENES), world_image_size(world))
    sentences = [caption(s) for s in _truth_scenes(world, CONSISTENCY_SENTENCES)]
    speech = speech_consistency(mio.speech_tokenizer, sentences, _training_voices(world))
    result["consistency"] = {"image": image, "speech": speech}
    result["seconds"] = round(time.monotonic() - started, 2)
    return result
