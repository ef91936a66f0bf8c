"""SFT conversations drawn from the world: one builder per task of the paper's Table 10
(each with a toyworld analogue), plus chain-of-visual-thought and speech-to-speech.

A builder takes a `Context` (the config, a media store that writes files and returns their
paths, the held-out split, the voices of the split) and the item's generator, and returns
an `Item`: the conversation in the manifest's JSON form (`mio.data.manifest`), its chat
mode, and the ground truth the evaluation suites score against. The same builders make the
training conversations and, with `Context.test` set, the test items of the evaluation
suites (`EVAL_SUITES`): test speech is spoken by held-out voices, and test generation
targets may use held-out attribute combinations.

Held out by construction: every scene, question and chart a builder draws goes through the
`Context` (`Context.scene`, `question`, `edit`, `clip`, `chart`), which draws again until
the key is on the item's side of the world's split (`mio.toyworld.world.HeldOut`): reserved
for test items when `test` is set, never reserved otherwise. A test item's `split` names how
it is held out (`SPLITS`).

Control arms: a test item may carry `arms`, other prompts for the same item that differ in
one ingredient (`covt`: `direct`, answering without drawing; `icl`: `question`, the question
asked in words with no examples, and `shuffled`, the examples' answers permuted). Each is a
format SFT teaches (`covt_direct`; `image_qa` asks the ICL questions in the same words).

Prompts come from `mio.prompts`, so training and evaluation ask the same way.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mio.prompts import ANSWER_MARKER, ICL_ANSWER, INSTRUCTIONS, instruction
from mio.toyworld import text as language
from mio.toyworld.charts import Chart, chart_qa, sample_chart
from mio.toyworld.scenes import COLORS, GRID, ROW_NAMES, SHAPES, SIZES, Scene, SceneObject, SceneSampler, caption
from mio.toyworld.speech_synth import Voice
from mio.toyworld.text import plural
from mio.toyworld.videos import (
    Change,
    Clip,
    apply_change,
    clip_qa,
    describe_clip,
    name,
    narrate,
    random_change,
    sample_clip,
    where,
)
from mio.toyworld.world import (
    EVAL_SUITE_NAMES,
    MAX_DRAWS,
    SFT_TASK_NAMES,
    HeldOut,
    WorldConfig,
    held_out,
    scene_key,
    stable_fraction,
    uses_combo,
)

CAPTION_REFERENCES = 8
"""Caption phrasings drawn as CIDEr references per test image."""
ICL_KINDS = ("color", "shape", "size", "cell", "count")
ICL_VALUES = {"color": len(COLORS), "shape": len(SHAPES), "size": len(SIZES), "cell": GRID * GRID, "count": 3}
ICL_TEST_KINDS = tuple(k for k in ICL_KINDS if ICL_VALUES[k] > 2)
"""Kinds of test episodes: those whose query can have an answer no shot shows."""
"""How many answers each in-context question has (count: scenes of 1-3 objects)."""
ICL_QA_KIND = {"color": "color", "shape": "shape_at", "size": "size", "cell": "where", "count": "count"}
"""The `scene_qa` question that asks an in-context kind in words (`icl.question` arm)."""

COVT_DRAW = "Draw the changed picture first, then answer"
COVT_DIRECT = "Answer"
"""The chain-of-visual-thought prompt (`mio.prompts`, task covt) with `COVT_DRAW` replaced by
`COVT_DIRECT` asks the same question without drawing (`covt_direct`, the `covt.direct` arm)."""
assert COVT_DRAW in INSTRUCTIONS["covt"], "mio.prompts changed the covt instruction: update COVT_DRAW"

SPLITS = {
    "unseen_combination": "a generation target with a colour-shape combination never generated in training "
                          "(the scene itself appears in no training item either)",
    "unseen_scene": "every picture of the item shows an object set that no training item shows",
    "unseen_clip": "every state of the clip is an object set that no training item shows",
    "unseen_chart": "a chart (its bars) that no training item shows",
    "unseen_question": "a question that no training item asks or answers, in any wording (fact included)",
    "unseen_voice": "speech by a voice never heard in training, saying a sentence never said or written in training",
    "unseen_sentence": "a sentence to speak that no training item says or writes",
}
"""How a test item is held out (its truth record's `split`)."""
SUITE_SPLITS = {
    "text_mcq": "unseen_question", "image_captioning": "unseen_scene", "image_qa": "unseen_scene",
    "image_generation": "unseen_scene", "image_editing": "unseen_scene", "asr": "unseen_voice", "tts": "unseen_sentence",
    "speech_understanding": "unseen_voice", "speech_generation": "unseen_question", "speech_to_speech": "unseen_voice",
    "video_captioning": "unseen_clip", "video_understanding": "unseen_clip", "video_generation": "unseen_clip",
    "storytelling": "unseen_scene", "covt": "unseen_scene", "icl": "unseen_scene", "mcot": "unseen_scene",
    "chart": "unseen_chart",
}
"""Each suite's split (image_generation: `unseen_combination` for targets with a held-out combination)."""


class MediaStore(Protocol):
    """Writes media files and returns their paths relative to the manifest (see
    `mio.toyworld.build.MediaStore`)."""

    def image(self, scene: Scene) -> str: ...
    def chart(self, chart) -> str: ...
    def video(self, clip: Clip) -> str: ...
    def speech(self, text: str, voice: Voice, about: Scene | None = None) -> str: ...


@dataclass
class Context:
    """What a builder draws from."""

    cfg: WorldConfig
    store: MediaStore
    combos: frozenset[tuple[str, str]]
    """Held-out (colour, shape) pairs."""
    voices: list[Voice]
    """Voices of this split (training or held-out)."""
    test: bool = False
    """Building test items: held-out voices, held-out combinations allowed as targets, and
    only keys the split reserves for test items."""
    heldout: HeldOut | None = None
    """The split of scenes, questions and charts (None: the config's, `world.held_out`)."""
    slot: int | None = None
    """Index of the test item being built: test questions cycle through the question
    families by it (`question_kind`), so every family gets its share of a suite."""
    assistant: Voice | None = None
    """The voice the assistant's spoken replies use (`world.assistant_voice`); None: a random
    voice of this split per reply."""

    def __post_init__(self) -> None:
        if self.heldout is None:
            self.heldout = held_out(self.cfg)

    # -- the split --

    def reply_voice(self, rng: random.Random) -> Voice:
        """The voice of one spoken reply of the assistant."""
        return self.assistant if self.assistant is not None else rng.choice(self.voices)

    def allows_scene(self, scene: Scene) -> bool:
        """Whether this side of the split may show `scene` (test: reserved, training: not)."""
        return self.heldout.scene(scene) == self.test

    def allows_question(self, kind: str, key: str) -> bool:
        """Whether this side of the split may ask a question (`mio.toyworld.text` kind, key)."""
        return self.heldout.question(kind, key) == self.test

    def allows_chart(self, chart: Chart) -> bool:
        return self.heldout.chart(chart.bars) == self.test

    # -- drawing on this side of the split --

    def scene(self, rng: random.Random, combo: bool | None = None, min_objects: int = 1, max_objects: int = 3) -> Scene:
        """A random scene on this side of the split. `combo` True: with at least one held-out
        combination; False: with none; None: anything."""
        for _ in range(MAX_DRAWS):
            scene = SceneSampler(seed=rng.randrange(2**31), min_objects=min_objects, max_objects=max_objects).sample()
            if (combo is None or uses_combo(scene, self.combos) == combo) and self.allows_scene(scene):
                return scene
        raise ValueError(f"no {self.side} scene of {min_objects}-{max_objects} objects with combo={combo} "
                         f"in {MAX_DRAWS} draws; check heldout_combos and heldout_share")

    def target_scene(self, rng: random.Random, min_objects: int = 1) -> Scene:
        """A scene the model is asked to generate: never a held-out combination in
        training; in a test, held-out combinations half of the time."""
        combo = rng.random() < 0.5 if self.test else False
        return self.scene(rng, combo, min_objects=min_objects)

    def edit(self, rng: random.Random, min_objects: int = 1,
             source_ok: Callable[[Scene], bool] | None = None) -> tuple[Scene, Change, Scene]:
        """(source, change, result): a scene and one change of it, both scenes on this side
        of the split; in training the source holds no held-out combination and the change
        creates none."""
        for _ in range(MAX_DRAWS):
            source = self.scene(rng, None if self.test else False, min_objects=min_objects)
            if source_ok is not None and not source_ok(source):
                continue
            change, _ = random_change(source, rng, self.forbidden)
            after = apply_change(source, change)
            if self.allows_scene(after):
                return source, change, after
        raise ValueError(f"no {self.side} scene change in {MAX_DRAWS} draws; check heldout_share")

    def clip(self, rng: random.Random) -> Clip:
        """A clip whose states are all on this side of the split; in training neither the
        scene nor the change uses a held-out combination."""
        for _ in range(MAX_DRAWS):
            scene = self.scene(rng, None if self.test else False)
            clip = sample_clip(scene, rng, self.cfg.min_video_frames, self.cfg.max_video_frames, self.forbidden)
            if all(self.allows_scene(s) for s in set(clip.states)):
                return clip
        raise ValueError(f"no {self.side} clip in {MAX_DRAWS} draws; check heldout_share")

    def chart(self, rng: random.Random) -> Chart:
        """A bar chart on this side of the split."""
        for _ in range(MAX_DRAWS):
            chart = sample_chart(rng)
            if self.allows_chart(chart):
                return chart
        raise ValueError(f"no {self.side} chart in {MAX_DRAWS} draws; check heldout_share")

    def question_kind(self, rng: random.Random) -> str | None:
        """The question family of the item: in a test one of the families that can be held
        out, by `slot` when set; in training any (None)."""
        if not self.test:
            return None
        kinds = language.HOLDABLE_KINDS
        return kinds[self.slot % len(kinds)] if self.slot is not None else rng.choice(kinds)

    def question(self, rng: random.Random) -> tuple[str, str]:
        """A (question, answer) pair of `mio.toyworld.text` on this side of the split."""
        return language.qa(rng, self.question_kind(rng), self.allows_question)

    @property
    def forbidden(self) -> frozenset[tuple[str, str]]:
        """Combinations a change may not create (the held-out ones, in training only)."""
        return frozenset() if self.test else self.combos

    @property
    def side(self) -> str:
        """`held-out` (test items) or `training`."""
        return "held-out" if self.test else "training"


@dataclass
class Item:
    """One conversation with its ground truth, and for a test item how it is held out and
    its control arms."""

    task: str
    messages: list[dict]
    mode: str = "std"
    truth: dict = field(default_factory=dict)
    split: str = ""
    """How a test item is held out (a key of `SPLITS`; empty: its suite's `SUITE_SPLITS`)."""
    arms: dict[str, list[dict]] = field(default_factory=dict)
    """Control arm name -> the messages of the same item asked another way (test items only)."""

    def manifest_line(self, item_id: str, messages: list[dict] | None = None) -> dict:
        """The SFT manifest line (`mio.data.manifest` schema); `messages` for an arm's."""
        return {"type": "sft", "id": item_id, "task": self.task, "mode": self.mode,
                "messages": self.messages if messages is None else messages}


def user(*content) -> dict:
    return {"role": "user", "content": content[0] if len(content) == 1 and isinstance(content[0], str) else list(content)}


def assistant(*content) -> dict:
    return {"role": "assistant", "content": content[0] if len(content) == 1 and isinstance(content[0], str) else list(content)}


def T(text: str) -> dict:  # noqa: N802 - segment constructors read like the manifest keys
    return {"text": text}


def I(path: str) -> dict:  # noqa: N802,E743
    return {"image": path}


def V(path: str) -> dict:  # noqa: N802
    return {"video": path}


def S(path: str) -> dict:  # noqa: N802
    return {"speech": path}


# ---- ground truth as JSON ----

def scene_to_json(scene: Scene) -> dict:
    """A scene as JSON (objects as [shape, colour, size, row, col])."""
    return {"objects": [[o.shape, o.color, o.size, o.row, o.col] for o in scene.objects],
            "background": list(scene.background), "jitter_seed": scene.jitter_seed}


def scene_from_json(data: dict) -> Scene:
    """The inverse of `scene_to_json`."""
    return Scene(tuple(SceneObject(*o) for o in data["objects"]), tuple(data["background"]), data["jitter_seed"])


def _object_json(obj: SceneObject | None):
    return None if obj is None else [obj.shape, obj.color, obj.size, obj.row, obj.col]


def clip_to_json(clip: Clip) -> dict:
    """A clip as JSON."""
    c = clip.change
    return {"states": [scene_to_json(s) for s in clip.states],
            "change": {"kind": c.kind, "before": _object_json(c.before), "after": _object_json(c.after)}}


def clip_from_json(data: dict) -> Clip:
    """The inverse of `clip_to_json`."""
    c = data["change"]
    obj = lambda o: None if o is None else SceneObject(*o)  # noqa: E731
    return Clip(tuple(scene_from_json(s) for s in data["states"]), Change(c["kind"], obj(c["before"]), obj(c["after"])))


# ---- questions about scenes ----

def ask(kind: str, obj: SceneObject | None = None) -> str:
    """How image QA asks a question of `kind` about a scene (or one object of it); the
    in-context learning control arm asks in the same words (`ICL_QA_KIND`)."""
    if kind == "count":
        return "How many objects are there?"
    return {"shape_at": f"What shape is {where(obj)}?", "color": f"What colour is the {obj.shape}?",
            "where": f"Where is {name(obj)}?", "size": f"Is {name(obj)} big or small?"}[kind]


def scene_qa(scene: Scene, rng: random.Random) -> tuple[str, str, str]:
    """A question about a scene with a one- or two-word answer: (question, answer, kind)."""
    objs = scene.objects
    by_shape = {s: [o for o in objs if o.shape == s] for s in SHAPES}
    unique_shape = [o for o in objs if len(by_shape[o.shape]) == 1]
    unique_pair = [o for o in objs if sum((p.color, p.shape) == (o.color, o.shape) for p in objs) == 1]
    kinds = ["count", "shape_at", "exists"] + (["color"] if unique_shape else []) + (["where", "size"] if unique_pair else [])
    kind = rng.choice(kinds)
    if kind == "count":
        return ask("count"), str(len(objs)), kind
    if kind == "shape_at":
        o = rng.choice(objs)
        return ask("shape_at", o), o.shape, kind
    if kind == "exists":
        present = {(o.color, o.shape) for o in objs}
        if rng.random() < 0.5:
            color, shape = rng.choice(sorted(present))
        else:
            color, shape = rng.choice([(c, s) for c in COLORS for s in SHAPES if (c, s) not in present])
        return f"Is there a {color} {shape}?", "yes" if (color, shape) in present else "no", kind
    if kind == "color":
        o = rng.choice(unique_shape)
        return ask("color", o), o.color, kind
    o = rng.choice(unique_pair)
    if kind == "where":
        return ask("where", o), o.cell_name, kind
    return ask("size", o), o.size, kind


def _listing(objects) -> str:
    parts = [f"a {o.describe()}" for o in objects]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def reasoning_qa(scene: Scene, rng: random.Random) -> tuple[str, str, str]:
    """A counting question, its step-by-step answer and the final answer."""
    if rng.random() < 0.5:
        color = rng.choice(sorted({o.color for o in scene.objects} | {rng.choice(sorted(COLORS))}))
        question, label = f"How many {color} objects are there?", f"{color} ones"
        matching = [o for o in scene.objects if o.color == color]
    else:
        shape = rng.choice(sorted({o.shape for o in scene.objects} | {rng.choice(SHAPES)}))
        question, label = f"How many {plural(shape)} are there?", plural(shape)
        matching = [o for o in scene.objects if o.shape == shape]
    steps = f"The image shows {_listing(scene.objects)}. "
    steps += f"The {label}: {_listing(matching)}. " if matching else f"There are no {label}. "
    answer = str(len(matching))
    return question, steps + f"{ANSWER_MARKER} {answer}.", answer


def icl_answer(scene: Scene, kind: str) -> str:
    """The answer of an in-context episode of `kind` for one scene."""
    if kind == "count":
        return str(len(scene.objects))
    o = scene.objects[0]
    return {"color": o.color, "shape": o.shape, "size": o.size, "cell": o.cell_name}[kind]


def icl_question(scene: Scene, kind: str) -> str:
    """The question an in-context episode of `kind` answers, in image QA's words."""
    return ask(ICL_QA_KIND[kind], None if kind == "count" else scene.objects[0])


def shuffle_answers(answers: list[str]) -> list[str]:
    """The answers permuted among the shots so that as many shots as possible show an
    answer other than their own: all of them when no answer fills more than half the shots
    (equal answers are grouped, then every shot takes the answer the largest group's size
    further on, cyclically)."""
    n = len(answers)
    order = sorted(range(n), key=lambda i: (answers[i], i))
    shift = max(Counter(answers).values())
    shuffled = [""] * n
    for position, i in enumerate(order):
        shuffled[i] = answers[order[(position + shift) % n]]
    return shuffled


def edit_instruction(change: Change) -> str:
    """The imperative for a change: `Move the red circle to the top right.`"""
    k = change.kind
    if k == "move":
        return f"Move {name(change.before)} to the {change.after.cell_name}."
    if k in ("grow", "shrink"):
        return f"Make {name(change.before)} {change.after.size}."
    if k == "recolor":
        return f"Make {name(change.before)} {change.after.color}."
    if k == "appear":
        return f"Add a {change.after.describe()} {where(change.after)}."
    return f"Remove {name(change.before)}."


def covt_prompt(change: Change, question: str, draw: bool = True) -> str:
    """The chain-of-visual-thought prompt; `draw` False: the same words asking for the answer
    without the picture (`COVT_DRAW` -> `COVT_DIRECT`)."""
    prompt = instruction("covt", instruction=edit_instruction(change), question=question)
    return prompt if draw else prompt.replace(COVT_DRAW, COVT_DIRECT)


def covt_question(after: Scene, change: Change) -> tuple[str, str]:
    """A question about the changed scene whose answer depends on the whole picture."""
    if change.kind in ("recolor",):
        color = change.after.color
        return f"How many {color} objects are there now?", str(sum(o.color == color for o in after.objects))
    if change.kind in ("grow", "shrink"):
        return "How many big objects are there now?", str(sum(o.size == "big" for o in after.objects))
    moved = change.after or change.before
    row = moved.row
    count = sum(o.row == row for o in after.objects)
    return f"How many objects are in the {ROW_NAMES[row]} row now?", str(count)


# ---- builders ----

def image_captioning(ctx: Context, rng: random.Random) -> Item:
    scene = ctx.scene(rng)
    refs = sorted({caption(scene, seed=rng.randrange(2**31)) for _ in range(CAPTION_REFERENCES)} | {caption(scene)})
    return Item("image_captioning", [user(I(ctx.store.image(scene)), T(instruction("image_captioning"))),
                                     assistant(caption(scene))],
                truth={"scene": scene_to_json(scene), "references": refs})


def image_qa(ctx: Context, rng: random.Random) -> Item:
    scene = ctx.scene(rng)
    question, answer, kind = scene_qa(scene, rng)
    return Item("image_qa", [user(I(ctx.store.image(scene)), T(instruction("image_qa", question=question))), assistant(answer)],
                truth={"answer": answer, "question": question, "kind": kind})


def mcot(ctx: Context, rng: random.Random) -> Item:
    scene = ctx.scene(rng)
    question, steps, answer = reasoning_qa(scene, rng)
    return Item("mcot", [user(I(ctx.store.image(scene)), T(instruction("mcot", question=question))), assistant(steps)],
                truth={"answer": answer, "question": question})


def chart(ctx: Context, rng: random.Random) -> Item:
    c = ctx.chart(rng)
    question, answer = chart_qa(c, rng)
    return Item("chart", [user(I(ctx.store.chart(c)), T(instruction("chart", question=question))), assistant(answer)],
                truth={"answer": answer, "question": question, "bars": [list(b) for b in c.bars]})


def mcq(ctx: Context, rng: random.Random, named: bool = False) -> Item:
    """A multiple-choice question answered with its letter. `named`: the question names the
    right option's content ("Which option is 7?"), which teaches the binding of an option's
    content to its letter apart from solving the question."""
    item = language.mcq(rng, ctx.question_kind(rng), ctx.allows_question)
    if named:
        item = dataclasses.replace(item, question=f"Which option is {item.options[item.answer]}?")
    layout = language.format_mcq(item)
    question = layout.removesuffix("\nAnswer:")
    return Item("mcq", [user(instruction("mcq", question=question)), assistant(item.letter)],
                truth={"answer": item.letter, "layout": layout})


# Shares of the language SFT task: MCQs, MCQs that name their answer, and plain QA the rest.
LANGUAGE_MCQ_SHARE = 0.35
LANGUAGE_NAMED_MCQ_SHARE = 0.15


def language_only(ctx: Context, rng: random.Random) -> Item:
    draw = rng.random()
    if draw < LANGUAGE_MCQ_SHARE + LANGUAGE_NAMED_MCQ_SHARE:
        item = mcq(ctx, rng, named=draw >= LANGUAGE_MCQ_SHARE)
        item.task = "language"
        return item
    question, answer = ctx.question(rng)
    return Item("language", [user(instruction("language", question=question)), assistant(answer)],
                truth={"answer": answer, "question": question})


def image_generation(ctx: Context, rng: random.Random) -> Item:
    scene = ctx.target_scene(rng)
    text = caption(scene)
    combo = uses_combo(scene, ctx.combos)
    return Item("image_generation", [user(instruction("image_generation", caption=text)), assistant(I(ctx.store.image(scene)))],
                truth={"scene": scene_to_json(scene), "caption": text, "heldout": combo},
                split="unseen_combination" if combo else "unseen_scene")


def image_editing(ctx: Context, rng: random.Random) -> Item:
    source, change, target = ctx.edit(rng)
    text = edit_instruction(change)
    # The instruction comes before the picture, so source code k and edited code k are always
    # the same distance apart: the copy an edit mostly is sits at one relative position.
    return Item("image_editing", [user(T(instruction("image_editing", instruction=text)), I(ctx.store.image(source))),
                                  assistant(I(ctx.store.image(target)))],
                truth={"scene": scene_to_json(target), "source": scene_to_json(source), "instruction": text})


def utterance_text(ctx: Context, rng: random.Random) -> tuple[str, Scene | None]:
    """Something to say, and the scene it describes (or None): a caption, a question or (in
    training) an answer sentence, which is too small a space to hold out."""
    kind = rng.randrange(2 if ctx.test else 3)
    if kind == 0:
        scene = ctx.scene(rng, max_objects=2)
        return caption(scene), scene
    if kind == 1:
        return ctx.question(rng)[0], None
    return f"{ANSWER_MARKER} {language.qa(rng)[1]}.", None


def asr(ctx: Context, rng: random.Random) -> Item:
    text, about = utterance_text(ctx, rng)
    audio = ctx.store.speech(text, rng.choice(ctx.voices), about)
    return Item("asr", [user(S(audio), T(instruction("asr"))), assistant(text)], truth={"text": text})


def tts(ctx: Context, rng: random.Random) -> Item:
    text, about = utterance_text(ctx, rng)
    audio = ctx.store.speech(text, ctx.reply_voice(rng), about)
    return Item("tts", [user(instruction("tts", text=text)), assistant(S(audio))], mode="voice",
                truth={"text": text, "reference": audio})


def speech_understanding(ctx: Context, rng: random.Random) -> Item:
    question, answer = ctx.question(rng)
    audio = ctx.store.speech(question, rng.choice(ctx.voices))
    return Item("speech_understanding", [user(S(audio), T(instruction("speech_understanding"))), assistant(answer)],
                truth={"answer": answer, "question": question})


def speech_generation(ctx: Context, rng: random.Random) -> Item:
    question, answer = ctx.question(rng)
    spoken = f"{ANSWER_MARKER} {answer}."
    audio = ctx.store.speech(spoken, ctx.reply_voice(rng))
    return Item("speech_generation", [user(question), assistant(S(audio))], mode="voice",
                truth={"answer": answer, "text": spoken, "question": question, "reference": audio})


def speech_to_speech(ctx: Context, rng: random.Random) -> Item:
    question, answer = ctx.question(rng)
    spoken = f"{ANSWER_MARKER} {answer}."
    asked = ctx.store.speech(question, rng.choice(ctx.voices))
    reply = ctx.store.speech(spoken, ctx.reply_voice(rng))
    return Item("speech_to_speech", [user(S(asked)), assistant(S(reply))], mode="voice",
                truth={"answer": answer, "text": spoken, "question": question, "reference": reply})


def draw_clip(ctx: Context, rng: random.Random) -> Clip:
    """A clip on the context's side of the split (`Context.clip`)."""
    return ctx.clip(rng)


def video_captioning(ctx: Context, rng: random.Random) -> Item:
    clip = draw_clip(ctx, rng)
    description = describe_clip(clip)
    return Item("video_captioning", [user(V(ctx.store.video(clip)), T(instruction("video_captioning"))), assistant(description)],
                truth={"clip": clip_to_json(clip), "references": [description]})


def video_understanding(ctx: Context, rng: random.Random) -> Item:
    clip = draw_clip(ctx, rng)
    question, answer = clip_qa(clip)
    return Item("video_understanding", [user(V(ctx.store.video(clip)), T(instruction("video_understanding", question=question))),
                                        assistant(answer)],
                truth={"answer": answer, "question": question, "kind": clip.change.kind})


def video_dialogue(ctx: Context, rng: random.Random) -> Item:
    clip = draw_clip(ctx, rng)
    question, answer = clip_qa(clip)
    return Item("video_dialogue", [user(V(ctx.store.video(clip)), T(instruction("video_captioning"))),
                                   assistant(describe_clip(clip)),
                                   user(instruction("video_understanding", question=question)), assistant(answer)],
                truth={"answer": answer, "question": question})


def video_generation(ctx: Context, rng: random.Random) -> Item:
    clip = draw_clip(ctx, rng)
    description = describe_clip(clip)
    return Item("video_generation", [user(instruction("video_generation", description=description)),
                                     assistant(V(ctx.store.video(clip)))],
                truth={"clip": clip_to_json(clip), "description": description})


def story(ctx: Context, rng: random.Random) -> tuple[list[Scene], list[str]]:
    """A multi-scene story: states and one sentence per state (a caption, then changes),
    every state on the context's side of the split."""
    for _ in range(MAX_DRAWS):
        states = [ctx.target_scene(rng, min_objects=1)]
        sentences = [caption(states[0])]
        for _ in range(ctx.cfg.story_steps - 1):
            change, _ = random_change(states[-1], rng, ctx.forbidden)
            states.append(apply_change(states[-1], change))
            sentences.append("Then " + narrate(change)[0].lower() + narrate(change)[1:])
        if all(ctx.allows_scene(s) for s in states):
            return states, sentences
    raise ValueError(f"no {ctx.side} story in {MAX_DRAWS} draws; check heldout_share and story_steps")


def storytelling(ctx: Context, rng: random.Random) -> Item:
    """Illustrate a story: one picture per numbered sentence, each after its number. The reply
    repeats the numbers, not the sentences: each number finds its sentence in the prompt, the
    first picture is drawn from a caption as in image generation and each next one a fixed
    distance after the last, as an edit. (Pictures back to back would be a video.)"""
    states, sentences = story(ctx, rng)
    story_text = " ".join(f"{k}. {sentence}" for k, sentence in enumerate(sentences, 1))
    reply = []
    for k, scene in enumerate(states, 1):
        reply += [T(f"{k}." if k == 1 else f" {k}."), I(ctx.store.image(scene))]
    return Item("storytelling", [user(instruction("storytelling", story=story_text)), assistant(*reply)],
                truth={"states": [scene_to_json(s) for s in states], "sentences": sentences})


def _covt_half(ctx: Context, draw: bool) -> Callable[[Scene], bool] | None:
    """In training, covt and covt_direct take disjoint halves of the source scenes, so no
    item is taught both with and without its picture."""
    if ctx.test:
        return None
    return lambda source: (stable_fraction(ctx.heldout.seed, "covt", scene_key(source)) < 0.5) == draw


def _covt(ctx: Context, rng: random.Random, draw: bool) -> Item:
    source, change, after = ctx.edit(rng, min_objects=2, source_ok=_covt_half(ctx, draw))
    question, answer = covt_question(after, change)
    picture = I(ctx.store.image(source))
    # Instruction first, as in image_editing: a fixed distance from each source code to its copy.
    direct = [user(T(covt_prompt(change, question, draw=False)), picture), assistant(answer)]
    truth = {"answer": answer, "question": question, "scene": scene_to_json(after)}
    if not draw:
        return Item("covt_direct", direct, truth=truth)
    drawn = [user(T(covt_prompt(change, question)), picture), assistant(I(ctx.store.image(after)), T(answer))]
    return Item("covt", drawn, truth=truth, arms={"direct": direct} if ctx.test else {})


def covt(ctx: Context, rng: random.Random) -> Item:
    """Chain of visual thought: imagine a change, draw the changed picture, then answer."""
    return _covt(ctx, rng, draw=True)


def covt_direct(ctx: Context, rng: random.Random) -> Item:
    """covt's question in the same words, answered without drawing (its control format)."""
    return _covt(ctx, rng, draw=False)


def _icl_content(ctx: Context, scenes: list[Scene], answers: list[str]) -> list[dict]:
    content = []
    for scene, answer in zip(scenes, answers):
        content += [I(ctx.store.image(scene)), T(ICL_ANSWER.format(answer=answer) + "\n")]
    return content


def icl(ctx: Context, rng: random.Random) -> Item:
    # A test episode's query answer is none of its shots' answers, so copying a shot never
    # solves it, and its shots show varied answers (no answer on more than half of them
    # where the kind has answers enough), so the shuffled arm gives every shot another
    # answer than its own. Both need a kind with more than two answers.
    kind = rng.choice(ICL_TEST_KINDS if ctx.test else ICL_KINDS)
    shots = ctx.cfg.icl_shots if ctx.test else rng.randint(1, ctx.cfg.icl_shots)
    max_objects = 3 if kind == "count" else 1
    most = max(shots // 2, -(-shots // (ICL_VALUES[kind] - 1)))
    for _ in range(MAX_DRAWS):
        scenes = [ctx.scene(rng, max_objects=max_objects) for _ in range(shots + 1)]
        answers = [icl_answer(s, kind) for s in scenes[:-1]]
        if not ctx.test or (max(Counter(answers).values()) <= most and icl_answer(scenes[-1], kind) not in answers):
            break
    else:
        raise ValueError(f"no in-context episode of kind {kind!r} with varied answers in {MAX_DRAWS} draws")
    query = I(ctx.store.image(scenes[-1]))
    answer = icl_answer(scenes[-1], kind)
    reply = assistant(ICL_ANSWER.format(answer=answer))
    truth = {"answer": answer, "kind": kind, "shots": shots}
    arms = {}
    if ctx.test:
        shuffled = shuffle_answers(answers)
        question = instruction("image_qa", question=icl_question(scenes[-1], kind))
        arms = {"question": [user(query, T(question)), assistant(answer)],
                "shuffled": [user(*_icl_content(ctx, scenes[:-1], shuffled), query), reply]}
        truth.update(question=icl_question(scenes[-1], kind), shot_answers=answers, shuffled_answers=shuffled)
    return Item("icl", [user(*_icl_content(ctx, scenes[:-1], answers), query), reply], truth=truth, arms=arms)


Builder = Callable[[Context, random.Random], Item]

SFT_TASKS: dict[str, Builder] = {
    "language": language_only,
    "icl": icl,
    "mcot": mcot,
    "chart": chart,
    "image_editing": image_editing,
    "asr": asr,
    "video_dialogue": video_dialogue,
    "image_qa": image_qa,
    "speech_generation": speech_generation,
    "speech_understanding": speech_understanding,
    "image_captioning": image_captioning,
    "image_generation": image_generation,
    "tts": tts,
    "video_generation": video_generation,
    "video_understanding": video_understanding,
    "video_captioning": video_captioning,
    "storytelling": storytelling,
    "covt": covt,
    "covt_direct": covt_direct,
    "speech_to_speech": speech_to_speech,
}
"""Table 10's tasks (toyworld analogues), chain-of-visual-thought (with its answer-directly
control format) and speech-to-speech."""
assert tuple(SFT_TASKS) == SFT_TASK_NAMES

EVAL_SUITES: dict[str, Builder] = {
    "text_mcq": mcq,
    "image_captioning": image_captioning,
    "image_qa": image_qa,
    "image_generation": image_generation,
    "image_editing": image_editing,
    "asr": asr,
    "tts": tts,
    "speech_understanding": speech_understanding,
    "speech_generation": speech_generation,
    "speech_to_speech": speech_to_speech,
    "video_captioning": video_captioning,
    "video_understanding": video_understanding,
    "video_generation": video_generation,
    "storytelling": storytelling,
    "covt": covt,
    "icl": icl,
    "mcot": mcot,
    "chart": chart,
}
"""One test suite per ability, and the builder of its items."""
assert tuple(EVAL_SUITES) == EVAL_SUITE_NAMES == tuple(SUITE_SPLITS)

