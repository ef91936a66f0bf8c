"""Blind baselines: replies made without looking at what the test item shows, scored by the
suites' own code, so that every model score stands beside what no understanding at all gets.

A baseline is a `Runner` whose replies follow a fixed policy instead of a model:

| baseline | reply |
|---|---|
| `constant` | one reply to every item: the suite's most frequent training answer, or one fixed picture / clip / utterance |
| `name_everything` | captioning only: one caption naming every shape, colour, size and cell |
| `prompt_copy` | the prompt given back: its text, or its own picture / video / speech |
| `random_media` | a well-formed random picture, clip or utterance of the world (a fresh one per item) |

Each suite gets the baselines that fit its output (`SUITE_BASELINES`). A score that a blind
baseline matches measures nothing; `tests/test_eval_baselines.py` checks that every baseline
stays at chance on every suite's headline metric.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from mio.data.manifest import read_manifest
from mio.eval.suites import EvalItem, Runner, run_suite
from mio.media.audio import load_audio
from mio.segments import Image, Message, Segment, Speech, Text, Video
from mio.toyworld.scenes import COL_NAMES, COLORS, ROW_NAMES, SHAPES, SIZES, SceneSampler, render
from mio.toyworld.videos import render_clip, sample_clip

TEXT_ONLY = ("constant", "prompt_copy")
SUITE_BASELINES: dict[str, tuple[str, ...]] = {
    "text_mcq": TEXT_ONLY,
    "image_captioning": ("constant", "name_everything", "prompt_copy"),
    "image_qa": TEXT_ONLY,
    "image_generation": ("constant", "random_media"),
    "image_editing": ("prompt_copy", "random_media"),
    "asr": TEXT_ONLY,
    "tts": ("constant", "random_media"),
    "speech_understanding": TEXT_ONLY,
    "speech_generation": ("constant", "random_media"),
    "speech_to_speech": ("prompt_copy", "random_media"),
    "video_captioning": TEXT_ONLY,
    "video_understanding": TEXT_ONLY,
    "video_generation": ("constant", "random_media"),
    "storytelling": ("constant", "random_media"),
    "covt": ("constant", "random_media"),
    "icl": TEXT_ONLY,
    "mcot": TEXT_ONLY,
    "chart": TEXT_ONLY,
}
"""The blind baselines each suite is scored with."""
SUITE_TASK = {"text_mcq": "language"}
"""The SFT task whose replies a suite's `constant` baseline draws on (default: the suite's name)."""
BASELINE_SEED = 1234
"""Seed of the random media (fixed: a baseline is the same on every run)."""
BASELINE_FRAMES = 4
"""States of a random clip."""


def name_everything() -> str:
    """One caption that names every size, colour, shape and cell: the caption that games a
    metric which never penalises objects that are not there."""
    cells = [f"{r} {c}" for r in ROW_NAMES for c in COL_NAMES]
    colors, shapes = list(COLORS), list(SHAPES)
    parts = [f"a {SIZES[k % len(SIZES)]} {colors[k % len(colors)]} {shapes[k % len(shapes)]} at the {cell}"
             for k, cell in enumerate(cells)]
    return "There is " + ", ".join(parts) + "."


def most_frequent_reply(world: Path, task: str) -> str:
    """The most frequent text reply of an SFT task's training conversations ('' if none)."""
    path = world / "sft" / f"{task}.jsonl"
    if not path.is_file():
        return ""
    counts: Counter[str] = Counter()
    for record in read_manifest(path):
        for role, content in record.messages:
            if role == "assistant" and isinstance(content, str):
                counts[content] += 1
    return counts.most_common(1)[0][0] if counts else ""


def training_utterances(world: Path, limit: int = 64) -> list[Path]:
    """Speech files of the training corpus (the pre-training speech-text pairs)."""
    path = world / "pretrain" / "speech_text_pair.jsonl"
    if not path.is_file():
        return []
    files = []
    for record in read_manifest(path, "speech_text_pair"):
        files += [m.paths[0] for m in record.media() if m.kind == "speech"]
        if len(files) >= limit:
            break
    return files


class BlindRunner(Runner):
    """A `Runner` whose replies follow one blind policy; it never sees an item's truth."""

    def __init__(self, policy: str, world: Path, image_size: int = 64, speech_seconds: float = 3.0):
        super().__init__(model=None)
        self.policy, self.world, self.image_size = policy, Path(world), image_size
        self.rng = random.Random(BASELINE_SEED)
        self.scenes = SceneSampler(seed=BASELINE_SEED)
        self.utterances = training_utterances(self.world)
        self.speech_seconds = speech_seconds
        self._constant: dict[str, list[Segment]] = {}

    @property
    def tokens_per_image(self) -> int:
        return 0  # budgets are meaningless here: nothing is generated

    def speech_tokens(self, seconds: float = 0.0) -> int:
        return 0

    def chat(self, suite: str, items: Sequence[EvalItem], prompts: Sequence[list[Message]] | None = None,
             output_modalities=None, max_new_tokens: int = 0) -> list[list[Segment]]:
        prompts = list(prompts) if prompts is not None else [i.prompt for i in items]
        replies = [self._reply(suite, p[-1].segments, output_modalities) for p in prompts]
        self._keep(suite, items, replies)
        return replies

    def complete(self, suite: str, items: Sequence[EvalItem], prompts: Sequence[list[Segment]],
                 output_modalities=None, max_new_tokens: int = 0) -> list[list[Segment]]:
        replies = [self._reply(suite, list(p), output_modalities) for p in prompts]
        self._keep(suite, items, replies)
        return replies

    # -- the policies --

    def _reply(self, suite: str, prompt: list[Segment], modalities) -> list[Segment]:
        kind = _output_kind(modalities)
        if self.policy == "prompt_copy":
            return _copy(prompt, kind)
        if self.policy == "random_media":
            return [self._random(kind)] if kind != "text" else []
        if self.policy == "name_everything":
            return [Text(name_everything())]
        if self.policy == "constant":
            base = suite.split("/")[0]
            if base not in self._constant:
                self._constant[base] = ([Text(most_frequent_reply(self.world, SUITE_TASK.get(base, base)))]
                                        if kind == "text" else [self._random(kind)])
            return self._constant[base]
        raise ValueError(f"unknown baseline {self.policy!r}")

    def _random(self, kind: str) -> Segment:
        if kind == "image":
            return Image(image=render(self.scenes.sample(), self.image_size))
        if kind == "video":
            clip = sample_clip(self.scenes.sample(), self.rng, BASELINE_FRAMES, BASELINE_FRAMES)
            return Video(frames=[Image(image=f) for f in render_clip(clip, self.image_size)])
        if kind == "speech":
            if not self.utterances:
                return Text("")
            wave, rate = load_audio(self.rng.choice(self.utterances))
            return Speech(wave=wave, sample_rate=rate)
        return Text("")


def _output_kind(modalities) -> str:
    """The media a suite asks for ('text' when it asks for text, or for nothing in particular)."""
    wanted = set(modalities or ())
    for kind in ("speech", "video", "image"):
        if kind in wanted:
            return kind
    return "text"


def _copy(prompt: list[Segment], kind: str) -> list[Segment]:
    """The prompt's own content of the kind asked for: its text, picture, video or speech."""
    if kind == "text":
        return [Text(" ".join(s.text for s in prompt if isinstance(s, Text)))]
    wanted = {"image": Image, "video": Video, "speech": Speech}[kind]
    found = [s for s in prompt if isinstance(s, wanted)]
    if kind == "image" and not found:  # a video's first frame is a picture of the prompt too
        found = [v.frames[0] for v in prompt if isinstance(v, Video) and v.frames]
    return found[:1]


def baseline_scores(name: str, world: Path, limit: int | None, image_size: int, base: bool) -> dict:
    """Every blind baseline of suite `name` on the same items as the model, scored by the
    suite's own code: `{baseline: {metric: value}}` (intervals and counts left out)."""
    out = {}
    for policy in SUITE_BASELINES.get(name, ()):
        runner = BlindRunner(policy, world, image_size)
        runner.base = base
        scores = run_suite(name, runner, world, limit, image_size)
        out[policy] = {k: v for k, v in scores.items() if k not in ("n", "ci95", "baselines")}
    return out
