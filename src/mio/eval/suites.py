"""The evaluation suites: one per ability, each scored by the paper's metric and the
toyworld's independent judges.

A suite reads its test items from a built world (`DIR/eval/<suite>.jsonl`, SFT manifest
schema, and `<suite>.truth.jsonl`), asks the model in batches through `mio.api.MIO`
(`chat_batch` with the task's SFT prompt for instruction-tuned checkpoints,
`complete_batch` with the pre-training template for base ones) and scores the replies:

| suite | metrics (headline first) |
|---|---|
| text_mcq | MCQ accuracy; the share of replies giving the most common letter (1.0: a constant answer) |
| image_captioning | object F1 (an object counts when shape, colour, size and cell are right), precision, recall, exact, CIDEr |
| video_captioning | F1 of the changes the description claims against the true change, exact, CIDEr |
| image_qa, chart, video_understanding, speech_understanding, mcot | VQA accuracy |
| image_generation, image_editing | judge exact rate, object F1 of the judged picture, SSIM to the true render |
| asr | WER (Whisper normalisation) |
| tts, speech_generation, speech_to_speech | Whisper judge WER; also on the reference audio and on its codec reconstruction |
| video_generation | video judge (change accuracy, frames) |
| storytelling | judge exact rate per picture, of the first, of one after a right one; consistency between pictures |
| covt | accuracy drawing the changed picture first vs answering directly (both formats taught in SFT) |
| icl | accuracy k-shot vs a 0-shot prompt that states the question, and vs k shots with shuffled answers |

Every suite also gives `ci95`: a 95% interval per metric (Wilson for rates, a bootstrap over
items otherwise, paired for differences). Control arms of a suite are other prompts for the
same items (`DIR/eval/<suite>.<arm>.jsonl`, aligned line by line). Decoding uses the
model's defaults (the paper's Table 11) unless the runner is given a `DecodingConfig`.
Suites that speak are skipped (`SuiteSkipped`) without the Whisper judge.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image as PILImage

from mio.data.encode import EncodeConfig
from mio.data.manifest import MediaRef, read_manifest
from mio.eval import metrics
from mio.judges import image as image_judge
from mio.judges import speech as speech_judge
from mio.judges import video as video_judge
from mio.media.audio import load_audio
from mio.media.image import open_image
from mio.prompts import ANSWER_MARKER, BASE_TEMPLATES, ICL_ANSWER, base_prompt
from mio.segments import Image, Message, Segment, Speech, Text, Video
from mio.toyworld.scenes import render
from mio.toyworld.tasks import clip_from_json, scene_from_json
from mio.toyworld.videos import scene_change, state_detector

log = logging.getLogger(__name__)

# Reply budgets (tokens) beyond the media blocks themselves.
SHORT_ANSWER_TOKENS = 16
CAPTION_TOKENS = 64
DESCRIPTION_TOKENS = 96
REASONING_TOKENS = 128
STORY_NUMBER_TOKENS = 4
BLOCK_OVERHEAD = 4
"""Block delimiters and the stop token."""
MAX_SPEECH_SECONDS = 6.0
"""Longest spoken reply asked for (every toyworld utterance is shorter)."""
SPEECH_BUDGET_HEADROOM = 1.5
"""A suite's spoken replies may be this many times as long as its longest reference reply
(an undertrained model that never closes its speech block would otherwise run every row to
MAX_SPEECH_SECONDS, which is most of the evaluation's time)."""
DEFAULT_SPEECH_FRAME_RATE = 50.0
ICL_MARKER = ICL_ANSWER.split("{")[0].strip()


class SuiteSkipped(RuntimeError):
    """A suite cannot run here (no judge, or not meaningful for this checkpoint); the
    message says why."""


@dataclass
class EvalItem:
    """One test item: the prompt (raw media, reference reply removed), its truth and the
    reference reply."""

    id: str
    mode: str
    prompt: list[Message]
    truth: dict
    reference: list[Segment] = field(default_factory=list)

    @property
    def user_content(self) -> list[Segment]:
        """The segments of the last user turn."""
        return self.prompt[-1].segments


def _load_media(ref: MediaRef, image_size: int) -> Segment:
    if ref.kind == "image":
        return Image(image=open_image(ref.paths[0]))
    if ref.kind == "speech":
        wave, rate = load_audio(ref.paths[0])
        return Speech(wave=wave, sample_rate=rate)
    from mio.media.video import read_video, select_frames

    # The frames SFT saw: the demo's `mio prepare` keeps one keyframe per state of a chat video.
    frames = select_frames(read_video(ref.paths[0]), EncodeConfig().max_video_frames, image_size, "keyframes",
                           state_detector())
    return Video(frames=[Image(image=f) for f in frames])


def load_items(world: Path, suite: str, limit: int | None = None, image_size: int = 64, arm: str = "") -> list[EvalItem]:
    """The first `limit` test items of a suite, media loaded; with `arm`, the same items as
    the suite's control arm `<suite>.<arm>.jsonl` asks them."""
    name = f"{suite}.{arm}" if arm else suite
    manifest, truth_file = world / "eval" / f"{name}.jsonl", world / "eval" / f"{suite}.truth.jsonl"
    if not manifest.is_file() or not truth_file.is_file():
        raise FileNotFoundError(f"no test items for {name!r} in {world} (build the world with `mio toyworld`)")
    truths = [json.loads(line) for line in truth_file.read_text().splitlines() if line.strip()]
    items = []
    for record, truth in zip(read_manifest(manifest), truths):
        if limit is not None and len(items) >= limit:
            break
        messages = [Message(role, content if isinstance(content, str) else
                            [Text(p) if isinstance(p, str) else _load_media(p, image_size) for p in content])
                    for role, content in record.messages]
        reference = messages.pop().segments if messages[-1].role == "assistant" else []
        items.append(EvalItem(truth["id"], record.mode, messages, truth, reference))
    return items


@dataclass
class Runner:
    """Asks a model (`mio.api.MIO` or anything with its interface) and keeps its replies."""

    model: object
    base: bool = False
    """A base checkpoint: prompt with pre-training templates by continuation."""
    batch_size: int = 8
    seed: int = 0
    decoding: object = None
    """A `mio.generate.DecodingConfig`; None: the model's defaults (Table 11)."""
    replies: dict[str, list[dict]] = field(default_factory=dict)
    """Suite -> one record per item (id, text, the reply's segments)."""

    @property
    def tokens_per_image(self) -> int:
        return self.model.vocab.layout.tokens_per_image

    def image_tokens(self, images: int = 1) -> int:
        """Budget for `images` image blocks."""
        return images * (self.tokens_per_image + 2) + BLOCK_OVERHEAD

    def speech_tokens(self, seconds: float = MAX_SPEECH_SECONDS) -> int:
        """Budget for one spoken reply of up to `seconds` (all layers)."""
        tokenizer = getattr(self.model, "speech_tokenizer", None)
        rate = getattr(tokenizer, "frame_rate", None) or DEFAULT_SPEECH_FRAME_RATE
        return math.ceil(seconds * rate) * self.model.vocab.layout.speech_layers + BLOCK_OVERHEAD

    def chat(self, suite: str, items: Sequence[EvalItem], prompts: Sequence[list[Message]] | None = None,
             output_modalities=None, max_new_tokens: int = SHORT_ANSWER_TOKENS) -> list[list[Segment]]:
        """Replies to the items' prompts (or to `prompts`), grouped by chat mode."""
        prompts = list(prompts) if prompts is not None else [i.prompt for i in items]
        replies: list[list[Segment] | None] = [None] * len(items)
        for mode in sorted({i.mode for i in items}):
            index = [k for k, i in enumerate(items) if i.mode == mode]
            out = self.model.chat_batch([prompts[k] for k in index], mode=mode, output_modalities=output_modalities,
                                        decoding=self.decoding, seed=self.seed, batch_size=self.batch_size,
                                        max_new_tokens=max_new_tokens)
            for k, reply in zip(index, out):
                replies[k] = reply
        self._keep(suite, items, replies)
        return replies

    def complete(self, suite: str, items: Sequence[EvalItem], prompts: Sequence[list[Segment]],
                 output_modalities=None, max_new_tokens: int = SHORT_ANSWER_TOKENS) -> list[list[Segment]]:
        """Continuations of raw prompts (base checkpoints)."""
        replies = self.model.complete_batch(list(prompts), output_modalities=output_modalities, decoding=self.decoding,
                                            seed=self.seed, batch_size=self.batch_size, max_new_tokens=max_new_tokens)
        self._keep(suite, items, replies)
        return replies

    def _keep(self, suite: str, items: Sequence[EvalItem], replies) -> None:
        kept = self.replies.setdefault(suite, [])
        kept += [{"id": i.id, "text": text_of(r), "segments": r} for i, r in zip(items, replies)]


# ---- reading replies ----

def text_of(reply: Sequence[Segment]) -> str:
    """The reply's text."""
    return "".join(s.text for s in reply if isinstance(s, Text)).strip()


def images_of(reply: Sequence[Segment]) -> list[PILImage.Image]:
    """The reply's decoded pictures in order, video frames included."""
    pictures = []
    for s in reply:
        if isinstance(s, Image) and s.image is not None:
            pictures.append(s.image)
        elif isinstance(s, Video):
            pictures += [f.image for f in s.frames if f.image is not None]
    return pictures


def text_after_images(reply: Sequence[Segment]) -> str:
    """The text after the reply's last picture (all the text when there is none)."""
    last = max((k for k, s in enumerate(reply) if isinstance(s, (Image, Video))), default=-1)
    return text_of(reply[last + 1:])


def speech_of(reply: Sequence[Segment]) -> Speech | None:
    """The reply's first decoded utterance."""
    return next((s for s in reply if isinstance(s, Speech) and s.wave is not None), None)


def _first(content: Sequence[Segment], kind: type) -> Segment:
    return next(s for s in content if isinstance(s, kind))


def _needs_instruct(r: Runner, suite: str) -> None:
    if r.base:
        raise SuiteSkipped(f"{suite} has no pre-training template; it needs an instruction-tuned checkpoint")


def _needs_judge() -> None:
    if not speech_judge.available():
        raise SuiteSkipped(speech_judge.UNAVAILABLE_HINT)


def _arm(world: Path, suite: str, arm: str, items: list[EvalItem]) -> list[EvalItem]:
    """The control arm's prompts for exactly `items`."""
    try:
        arm_items = load_items(world, suite, len(items), arm=arm)
    except FileNotFoundError:
        raise SuiteSkipped(f"the world has no {suite}.{arm} control arm; rebuild it with `mio toyworld`") from None
    if [i.id for i in arm_items] != [i.id for i in items]:
        raise ValueError(f"{world}/eval/{suite}.{arm}.jsonl is not aligned with {suite}.jsonl")
    return arm_items


def _interval(values: Sequence[float]) -> list[float]:
    return list(metrics.mean_interval(values))


def _wer_scores(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[float, list[float]]:
    """Corpus WER and its 95% interval (a bootstrap over items)."""
    errors = speech_judge.word_errors(references, hypotheses)
    corpus = lambda pairs: sum(e for e, _ in pairs) / max(1, sum(w for _, w in pairs))  # noqa: E731
    return corpus(errors), list(metrics.bootstrap_interval(errors, statistic=corpus))


# ---- suites ----

def text_mcq(r: Runner, items: list[EvalItem]) -> dict:
    if r.base:
        replies = r.complete("text_mcq", items, [[Text(i.truth["layout"])] for i in items], {"text"})
    else:
        replies = r.chat("text_mcq", items, output_modalities={"text"})
    letters = [metrics.mcq_letter(text_of(x)) for x in replies]
    # A model that does not read the question answers one letter throughout; its accuracy is
    # then that letter's share of the answer key, which can sit far above chance on few items.
    top_letter = max(Counter(letter for letter in letters if letter).values(), default=0)
    correct = [float(letter == i.truth["answer"]) for i, letter in zip(items, letters)]
    return {"accuracy": metrics.mean(correct), "top_letter_share": top_letter / max(1, len(letters)),
            "ci95": {"accuracy": _interval(correct)}}


def _grouped(keys: Sequence[str], scores: Sequence[float]) -> dict[str, list[float]]:
    """The items' scores gathered by a key of each item (a split, a kind of question), keys sorted:
    which items an overall score misses."""
    groups: dict[str, list[float]] = {}
    for key, score in zip(keys, scores):
        groups.setdefault(key, []).append(score)
    return dict(sorted(groups.items()))


def _short_answers(suite: str):
    def run(r: Runner, items: list[EvalItem]) -> dict:
        _needs_instruct(r, suite)
        replies = r.chat(suite, items, output_modalities={"text"})
        scores = [metrics.vqa_accuracy(text_of(x), [i.truth["answer"]]) for i, x in zip(items, replies)]
        result = {"vqa_accuracy": metrics.mean(scores), "ci95": {"vqa_accuracy": _interval(scores)}}
        if items and all("kind" in i.truth for i in items):
            result["by_kind"] = {kind: {"vqa_accuracy": metrics.mean(v), "n": len(v)}
                                 for kind, v in _grouped([i.truth["kind"] for i in items], scores).items()}
        return result
    run.__doc__ = f"{suite}: a short answer per question, VQA accuracy (and per kind of question where the world names it)."
    return run


def mcot(r: Runner, items: list[EvalItem]) -> dict:
    _needs_instruct(r, "mcot")
    replies = r.chat("mcot", items, output_modalities={"text"}, max_new_tokens=REASONING_TOKENS)
    texts = [text_of(x) for x in replies]
    scores = [metrics.vqa_accuracy(metrics.extract_answer(t, ANSWER_MARKER), [i.truth["answer"]]) for i, t in zip(items, texts)]
    return {"vqa_accuracy": metrics.mean(scores), "answered": metrics.mean([ANSWER_MARKER in t for t in texts]),
            "ci95": {"vqa_accuracy": _interval(scores)}}


def image_captioning(r: Runner, items: list[EvalItem]) -> dict:
    if r.base:
        prompts = [base_prompt(BASE_TEMPLATES["image_captioning"], _first(i.user_content, Image)) for i in items]
        replies = r.complete("image_captioning", items, prompts, {"text"}, CAPTION_TOKENS)
    else:
        replies = r.chat("image_captioning", items, output_modalities={"text"}, max_new_tokens=CAPTION_TOKENS)
    texts = [text_of(x) for x in replies]
    scores = [metrics.caption_scores(scene_from_json(i.truth["scene"]).objects, t) for i, t in zip(items, texts)]
    keys = ("f1", "precision", "recall", "exact")
    result = {k: metrics.mean([x[k] for x in scores]) for k in keys}
    result["cider"] = metrics.cider([i.truth["references"] for i in items], texts) if len(items) > 1 else 0.0
    return {**result, "ci95": {k: _interval([x[k] for x in scores]) for k in keys}}


def _judge_images(items: list[EvalItem], pictures: list[PILImage.Image | None]) -> dict:
    """Judge accuracy and SSIM of generated pictures against the items' true scenes."""
    exact, f1, similarity = [], [], []
    for item, picture in zip(items, pictures):
        scene = scene_from_json(item.truth["scene"])
        if picture is None:
            ok, overlap, sim = 0.0, 0.0, 0.0
        else:
            read = image_judge.object_key(image_judge.read_objects(picture))
            ok = float(read == scene.key())
            overlap = metrics.object_scores(scene.key(), sorted(read))["f1"]
            sim = metrics.ssim(picture, render(scene, picture.width))
        exact.append(ok)
        f1.append(overlap)
        similarity.append(sim)
    result = {"judge_exact": metrics.mean(exact), "object_f1": metrics.mean(f1), "ssim": metrics.mean(similarity),
              "has_image": metrics.mean([p is not None for p in pictures])}
    by_split = _grouped([item.truth.get("split", "unseen_item") for item in items], exact)
    if len(by_split) > 1:
        result.update({f"judge_exact/{split}": metrics.mean(v) for split, v in by_split.items()})
    result["ci95"] = {"judge_exact": _interval(exact), "object_f1": _interval(f1)}
    return result


def _first_picture(reply) -> PILImage.Image | None:
    pictures = images_of(reply)
    return pictures[0] if pictures else None


def image_generation(r: Runner, items: list[EvalItem]) -> dict:
    if r.base:
        prompts = [base_prompt(BASE_TEMPLATES["image_generation"], text=i.truth["caption"]) for i in items]
        replies = r.complete("image_generation", items, prompts, {"image"}, r.image_tokens())
    else:
        replies = r.chat("image_generation", items, output_modalities={"image"}, max_new_tokens=r.image_tokens())
    return _judge_images(items, [_first_picture(x) for x in replies])


def image_editing(r: Runner, items: list[EvalItem]) -> dict:
    _needs_instruct(r, "image_editing")
    replies = r.chat("image_editing", items, output_modalities={"image"}, max_new_tokens=r.image_tokens())
    pictures = [_first_picture(x) for x in replies]
    result = _judge_images(items, pictures)
    copied = [p is not None and image_judge.object_key(image_judge.read_objects(p)) == scene_from_json(i.truth["source"]).key()
              for i, p in zip(items, pictures)]
    return {**result, "copied_source": metrics.mean(copied)}


def asr(r: Runner, items: list[EvalItem]) -> dict:
    if r.base:
        prompts = [base_prompt(BASE_TEMPLATES["asr"], _first(i.user_content, Speech)) for i in items]
        replies = r.complete("asr", items, prompts, {"text"}, CAPTION_TOKENS)
    else:
        replies = r.chat("asr", items, output_modalities={"text"}, max_new_tokens=CAPTION_TOKENS)
    wer, interval = _wer_scores([i.truth["text"] for i in items], [text_of(x) for x in replies])
    return {"wer": wer, "ci95": {"wer": interval}}


def _transcribe_files(paths: list[Path]) -> list[str]:
    return [speech_judge.transcribe([wave], rate)[0] for wave, rate in map(load_audio, paths)]


def _transcribe_reconstructions(tokenizer, paths: list[Path]) -> list[str] | None:
    """What the judge hears in the speech tokenizer's decode of each reference's codes: the
    best a model can do that writes those codes exactly (None without a tokenizer)."""
    if tokenizer is None:
        return None
    heard = []
    for wave, rate in map(load_audio, paths):
        decoded, decoded_rate = tokenizer.decode(tokenizer.encode(wave, rate))
        heard.append(speech_judge.transcribe([decoded], decoded_rate)[0])
    return heard


def _answers(items: list[EvalItem], heard: list[str]) -> list[float]:
    return [metrics.vqa_accuracy(metrics.extract_spoken_answer(h, ANSWER_MARKER), [i.truth["answer"]])
            for i, h in zip(items, heard)]


def _judge_speech(r: Runner, suite: str, items: list[EvalItem], replies, world: Path) -> dict:
    """Whisper's WER on generated speech beside its WER on the reference audio and on the
    speech tokenizer's reconstruction of it (`judge_wer_tokenizer`: the ceiling set by the
    codec); what it heard is kept with each reply (`heard`)."""
    texts = [i.truth["text"] for i in items]
    heard = []
    for reply in replies:
        speech = speech_of(reply)
        heard.append(speech_judge.transcribe([speech.wave], speech.sample_rate)[0] if speech is not None else "")
    kept = {record["id"]: record for record in r.replies[suite]}
    for item, transcript in zip(items, heard):
        kept[item.id]["heard"] = transcript
    paths = [world / "eval" / i.truth["reference"] for i in items]
    reference = _transcribe_files(paths)
    reconstructed = _transcribe_reconstructions(getattr(r.model, "speech_tokenizer", None), paths)
    wer, interval = _wer_scores(texts, heard)
    result = {"wer": wer, "judge_wer_reference": metrics.wer(texts, reference),
              "has_speech": metrics.mean([speech_of(x) is not None for x in replies]), "ci95": {"wer": interval}}
    if reconstructed is not None:
        result["judge_wer_tokenizer"] = metrics.wer(texts, reconstructed)
    if "answer" in items[0].truth:
        answers = _answers(items, heard)
        result["answer_accuracy"] = metrics.mean(answers)
        result["ci95"]["answer_accuracy"] = _interval(answers)
        if reconstructed is not None:
            result["answer_accuracy_tokenizer"] = metrics.mean(_answers(items, reconstructed))
    return result


def reply_seconds(items: Sequence[EvalItem]) -> float:
    """How long the suite's spoken replies may be: SPEECH_BUDGET_HEADROOM x its longest
    reference reply, at most MAX_SPEECH_SECONDS (which also stands in for missing references)."""
    longest = [len(seg.wave) / seg.sample_rate for i in items for seg in i.reference if isinstance(seg, Speech)]
    if len(longest) < len(items):
        return MAX_SPEECH_SECONDS
    return min(MAX_SPEECH_SECONDS, SPEECH_BUDGET_HEADROOM * max(longest))


def _spoken(suite: str):
    def run(r: Runner, items: list[EvalItem], world: Path) -> dict:
        _needs_judge()
        if r.base and suite != "tts":
            _needs_instruct(r, suite)
        budget = r.speech_tokens(reply_seconds(items))
        if r.base:
            prompts = [base_prompt(BASE_TEMPLATES["tts"], text=i.truth["text"]) for i in items]
            replies = r.complete(suite, items, prompts, {"speech"}, budget)
        else:
            replies = r.chat(suite, items, output_modalities={"speech"}, max_new_tokens=budget)
        return _judge_speech(r, suite, items, replies, world)
    run.__doc__ = f"{suite}: spoken replies transcribed by the Whisper judge."
    return run


def video_captioning(r: Runner, items: list[EvalItem]) -> dict:
    if r.base:
        prompts = [base_prompt(BASE_TEMPLATES["video_captioning"], _first(i.user_content, Video)) for i in items]
        replies = r.complete("video_captioning", items, prompts, {"text"}, DESCRIPTION_TOKENS)
    else:
        replies = r.chat("video_captioning", items, output_modalities={"text"}, max_new_tokens=DESCRIPTION_TOKENS)
    texts = [text_of(x) for x in replies]
    scores = [metrics.change_scores(clip_from_json(i.truth["clip"]).change, t) for i, t in zip(items, texts)]
    result = {"change_f1": metrics.mean([x["f1"] for x in scores]), "change_exact": metrics.mean([x["exact"] for x in scores])}
    result["cider"] = metrics.cider([i.truth["references"] for i in items], texts) if len(items) > 1 else 0.0
    return {**result, "ci95": {"change_f1": _interval([x["f1"] for x in scores]),
                               "change_exact": _interval([x["exact"] for x in scores])}}


def video_generation(r: Runner, items: list[EvalItem]) -> dict:
    budget = r.image_tokens(EncodeConfig().max_video_frames)
    if r.base:
        prompts = [base_prompt(BASE_TEMPLATES["video_generation"], text=i.truth["description"]) for i in items]
        replies = r.complete("video_generation", items, prompts, {"video"}, budget)
    else:
        replies = r.chat("video_generation", items, output_modalities={"video"}, max_new_tokens=budget)
    videos = [images_of(x) for x in replies]
    per_item = [video_judge.score([clip_from_json(i.truth["clip"])], [v]) for i, v in zip(items, videos)]
    keys = [k for k in per_item[0] if k != "n"]
    result = {k: metrics.mean([x[k] for x in per_item]) for k in keys}
    return {**result, "frames": metrics.mean([len(v) for v in videos]),
            "ci95": {"change_accuracy": _interval([x["change_accuracy"] for x in per_item])}}


def storytelling(r: Runner, items: list[EvalItem]) -> dict:
    _needs_instruct(r, "storytelling")
    steps = max(len(i.truth["states"]) for i in items)
    budget = r.image_tokens(steps) + steps * STORY_NUMBER_TOKENS
    replies = r.chat("storytelling", items, output_modalities={"text", "image"}, max_new_tokens=budget)
    exact, whole, consistent, counts, first, followed = [], [], [], [], [], []
    for item, reply in zip(items, replies):
        truth = [scene_from_json(s).key() for s in item.truth["states"]]
        read = [image_judge.object_key(image_judge.read_objects(p)) for p in images_of(reply)][: len(truth)]
        read += [None] * (len(truth) - len(read))
        hits = [a == b for a, b in zip(read, truth)]
        exact += hits
        first.append(hits[0])
        # The first picture is drawn from a caption, each next one from the previous one and
        # its sentence: apart, the two say whether a story fails at finding or at changing.
        followed += [now for before, now in zip(hits, hits[1:]) if before]
        whole.append(all(hits))
        counts.append(len(images_of(reply)))
        for k in range(1, len(truth)):
            ok = read[k - 1] is not None and read[k] is not None
            consistent.append(ok and scene_change(read[k - 1], read[k]) == scene_change(truth[k - 1], truth[k]))
    return {"image_exact": metrics.mean(exact), "story_exact": metrics.mean(whole),
            "first_exact": metrics.mean(first), "next_given_previous": metrics.mean(followed),
            "consistency": metrics.mean(consistent), "images_per_story": metrics.mean(counts),
            "ci95": {"image_exact": _interval(exact), "consistency": _interval(consistent)}}


def covt(r: Runner, items: list[EvalItem], world: Path) -> dict:
    """Draw the changed picture, then answer; against the control arm `direct`: the same items
    asked to answer directly (a format SFT teaches on other items), same checkpoint."""
    _needs_instruct(r, "covt")
    answers = [[i.truth["answer"]] for i in items]
    drawn = r.chat("covt", items, output_modalities={"text", "image"}, max_new_tokens=r.image_tokens() + SHORT_ANSWER_TOKENS)
    with_image = [metrics.vqa_accuracy(text_after_images(x), a) for x, a in zip(drawn, answers)]
    direct = r.chat("covt/direct", _arm(world, "covt", "direct", items), output_modalities={"text"})
    without = [metrics.vqa_accuracy(text_of(x), a) for x, a in zip(direct, answers)]
    judged = _judge_images(items, [_first_picture(x) for x in drawn])
    return {"gain": metrics.mean(with_image) - metrics.mean(without), "accuracy_with_image": metrics.mean(with_image),
            "accuracy_direct": metrics.mean(without), "image_exact": judged["judge_exact"],
            "ci95": {"gain": list(metrics.paired_difference_interval(with_image, without)),
                     "accuracy_with_image": _interval(with_image), "accuracy_direct": _interval(without)}}


def icl(r: Runner, items: list[EvalItem], world: Path) -> dict:
    """k shots of one unstated question, then a query; against two control arms on the same
    items: `question`, 0 shots with the question stated in words (a format SFT teaches), and
    `shuffled`, the same k shots with their answers permuted (the examples must be read)."""

    def ask(name: str, asked: list[EvalItem]) -> list[float]:
        if r.base:
            replies = r.complete(name, items, [i.user_content + [Text(ICL_MARKER)] for i in asked], {"text"})
        else:
            replies = r.chat(name, items, [i.prompt for i in asked], output_modalities={"text"})
        return [metrics.vqa_accuracy(metrics.extract_answer(text_of(x), ICL_MARKER), [i.truth["answer"]])
                for i, x in zip(items, replies)]

    k_shot = ask("icl", items)
    question = ask("icl/question", _arm(world, "icl", "question", items))
    shuffled = ask("icl/shuffled", _arm(world, "icl", "shuffled", items))
    return {"gain": metrics.mean(k_shot) - metrics.mean(question), "accuracy_k_shot": metrics.mean(k_shot),
            "accuracy_0_shot_question": metrics.mean(question), "accuracy_shuffled_labels": metrics.mean(shuffled),
            "gain_over_shuffled": metrics.mean(k_shot) - metrics.mean(shuffled), "k": items[0].truth["shots"],
            "ci95": {"gain": list(metrics.paired_difference_interval(k_shot, question)),
                     "gain_over_shuffled": list(metrics.paired_difference_interval(k_shot, shuffled)),
                     "accuracy_k_shot": _interval(k_shot)}}


@dataclass(frozen=True)
class Suite:
    """A suite's scorer, and whether it needs the world directory (reference audio)."""

    run: Callable
    needs_world: bool = False


SUITES: dict[str, Suite] = {
    "text_mcq": Suite(text_mcq),
    "image_captioning": Suite(image_captioning),
    "image_qa": Suite(_short_answers("image_qa")),
    "image_generation": Suite(image_generation),
    "image_editing": Suite(image_editing),
    "asr": Suite(asr),
    "tts": Suite(_spoken("tts"), needs_world=True),
    "speech_understanding": Suite(_short_answers("speech_understanding")),
    "speech_generation": Suite(_spoken("speech_generation"), needs_world=True),
    "speech_to_speech": Suite(_spoken("speech_to_speech"), needs_world=True),
    "video_captioning": Suite(video_captioning),
    "video_understanding": Suite(_short_answers("video_understanding")),
    "video_generation": Suite(video_generation),
    "storytelling": Suite(storytelling),
    "covt": Suite(covt, needs_world=True),
    "icl": Suite(icl, needs_world=True),
    "mcot": Suite(mcot),
    "chart": Suite(_short_answers("chart")),
}
"""Every suite, in report order (the same names as `mio.toyworld.tasks.EVAL_SUITES`)."""


HEADLINE: dict[str, str] = {
    "text_mcq": "accuracy", "image_captioning": "f1", "image_qa": "vqa_accuracy", "image_generation": "judge_exact",
    "image_editing": "judge_exact", "asr": "wer", "tts": "wer", "speech_understanding": "vqa_accuracy",
    "speech_generation": "answer_accuracy", "speech_to_speech": "answer_accuracy", "video_captioning": "change_f1",
    "video_understanding": "vqa_accuracy", "video_generation": "change_accuracy", "storytelling": "image_exact",
    "covt": "gain", "icl": "gain", "mcot": "vqa_accuracy", "chart": "vqa_accuracy",
}
"""Each suite's headline metric: the one its tables, targets and baseline checks lead with.
Spoken answers are judged by the answer heard, not WER: every reply is `The answer is X.`, so
any reply in that template has a low WER whatever X is."""
LOWER_IS_BETTER = {"wer"}
"""Metrics where less is better."""


def check_suite_names(names) -> None:
    """Raise ValueError naming the first of `names` that is not a suite."""
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        raise ValueError(f"unknown suite {unknown[0]!r}; suites: {', '.join(SUITES)}")


def run_suite(name: str, runner: Runner, world: Path, limit: int | None = None, image_size: int = 64) -> dict:
    """Load a suite's items, ask the model, score: `{metric: value, ..., "n": count}`.
    Raises `SuiteSkipped` when the suite cannot run here."""
    suite = SUITES[name]
    items = load_items(world, name, limit, image_size)
    if not items:
        raise SuiteSkipped(f"{name} has no test items")
    scores = suite.run(runner, items, world) if suite.needs_world else suite.run(runner, items)
    return {**scores, "n": len(items)}
