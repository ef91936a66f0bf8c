"""SFT conversations drawn from the world: one builder per task of the paper's Table 10
(each with a toyworld analogue), plus chain-of-visual-thought and speech-to-speech.

A builder takes a `Context` (the config, a media store that writes files and returns their
paths, the held-out split, the voices of the split) and the item's generator, and returns
an `Item`: the conversation in the manifest's JSON form (`mio.data.manifest`), its chat
mode, and the ground truth the evaluation suites score against. The same builders make the
training conversations and, with `Context.test` set, the test items of the evaluation
suites (`EVAL_SUITES`): test speech is spoken by held-out voices, and test generation
targets may use held-out attribute combinations.

Prompts come from `mio.prompts`, so training and evaluation ask the same way.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from mio.prompts import ANSWER_MARKER, ICL_ANSWER, instruction
from mio.toyworld import text as language
from mio.toyworld.charts import chart_qa, sample_chart
from mio.toyworld.scenes import COLORS, ROW_NAMES, SHAPES, Scene, SceneObject, caption
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
from mio.toyworld.world import WorldConfig, draw_scene

CAPTION_REFERENCES = 8
"""Caption phrasings drawn as CIDEr references per test image."""
ICL_KINDS = ("color", "shape", "size", "cell", "count")


class MediaStore(Protocol):
    """Writes media files and returns their paths relative to the manifest (see
    `mio.toyworld.build.MediaStore`)."""

    def image(self, scene: Scene) -> str: ...
    def chart(self, chart) -> str: ...
    def video(self, clip: Clip) -> str: ...
    def speech(self, text: str, voice: Voice) -> str: ...


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
    """Building test items: held-out voices, held-out combinations allowed as targets."""

    def target_scene(self, rng: random.Random, min_objects: int = 1) -> Scene:
        """A scene the model is asked to generate: never a held-out combination in
        training; in a test, held-out combinations half of the time."""
        heldout = rng.random() < 0.5 if self.test else False
        return draw_scene(rng, self.combos, heldout, min_objects=min_objects)

    @property
    def forbidden(self) -> frozenset[tuple[str, str]]:
        """Combinations a change may not create (the held-out ones, in training only)."""
        return frozenset() if self.test else self.combos


@dataclass
class Item:
    """One conversation with its ground truth."""

    task: str
    messages: list[dict]
    mode: str = "std"
    truth: dict = field(default_factory=dict)

    def manifest_line(self, item_id: str) -> dict:
        """The SFT manifest line (`mio.data.manifest` schema)."""
        return {"type": "sft", "id": item_id, "task": self.task, "mode": self.mode, "messages": self.messages}


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

def scene_qa(scene: Scene, rng: random.Random) -> tuple[str, str]:
    """A question about a scene with a one- or two-word answer."""
    objs = scene.objects
    by_shape = {s: [o for o in objs if o.shape == s] for s in SHAPES}
    unique_shape = [o for o in objs if len(by_shape[o.shape]) == 1]
    unique_pair = [o for o in objs if sum((p.color, p.shape) == (o.color, o.shape) for p in objs) == 1]
    kinds = ["count", "shape_at", "exists"] + (["color"] if unique_shape else []) + (["where", "size"] if unique_pair else [])
    kind = rng.choice(kinds)
    if kind == "count":
        return "How many objects are there?", str(len(objs))
    if kind == "shape_at":
        o = rng.choice(objs)
        return f"What shape is {where(o)}?", o.shape
    if kind == "exists":
        present = {(o.color, o.shape) for o in objs}
        if rng.random() < 0.5:
            color, shape = rng.choice(sorted(present))
        else:
            color, shape = rng.choice([(c, s) for c in COLORS for s in SHAPES if (c, s) not in present])
        return f"Is there a {color} {shape}?", "yes" if (color, shape) in present else "no"
    if kind == "color":
        o = rng.choice(unique_shape)
        return f"What colour is the {o.shape}?", o.color
    o = rng.choice(unique_pair)
    if kind == "where":
        return f"Where is {name(o)}?", o.cell_name
    return f"Is {name(o)} big or small?", o.size


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
    scene = draw_scene(rng, ctx.combos, None)
    refs = sorted({caption(scene, seed=rng.randrange(2**31)) for _ in range(CAPTION_REFERENCES)} | {caption(scene)})
    return Item("image_captioning", [user(I(ctx.store.image(scene)), T(instruction("image_captioning"))),
                                     assistant(caption(scene))],
                truth={"scene": scene_to_json(scene), "references": refs})


def image_qa(ctx: Context, rng: random.Random) -> Item:
    scene = draw_scene(rng, ctx.combos, None)
    question, answer = scene_qa(scene, rng)
    return Item("image_qa", [user(I(ctx.store.image(scene)), T(instruction("image_qa", question=question))), assistant(answer)],
                truth={"answer": answer, "question": question})


def mcot(ctx: Context, rng: random.Random) -> Item:
    scene = draw_scene(rng, ctx.combos, None)
    question, steps, answer = reasoning_qa(scene, rng)
    return Item("mcot", [user(I(ctx.store.image(scene)), T(instruction("mcot", question=question))), assistant(steps)],
                truth={"answer": answer, "question": question})


def chart(ctx: Context, rng: random.Random) -> Item:
    c = sample_chart(rng)
    question, answer = chart_qa(c, rng)
    return Item("chart", [user(I(ctx.store.chart(c)), T(instruction("chart", question=question))), assistant(answer)],
                truth={"answer": answer, "question": question, "bars": [list(b) for b in c.bars]})


def mcq(ctx: Context, rng: random.Random) -> Item:
    item = language.mcq(rng)
    layout = language.format_mcq(item)
    question = layout.removesuffix("\nAnswer:")
    return Item("mcq", [user(instruction("mcq", question=question)), assistant(item.letter)],
                truth={"answer": item.letter, "layout": layout})


def language_only(ctx: Context, rng: random.Random) -> Item:
    if rng.random() < 0.5:
        item = mcq(ctx, rng)
        item.task = "language"
        return item
    question, answer = language.qa(rng)
    return Item("language", [user(instruction("language", question=question)), assistant(answer)],
                truth={"answer": answer, "question": question})


def image_generation(ctx: Context, rng: random.Random) -> Item:
    scene = ctx.target_scene(rng)
    text = caption(scene)
    return Item("image_generation", [user(instruction("image_generation", caption=text)), assistant(I(ctx.store.image(scene)))],
                truth={"scene": scene_to_json(scene), "caption": text,
                       "heldout": any((o.color, o.shape) in ctx.combos for o in scene.objects)})


def image_editing(ctx: Context, rng: random.Random) -> Item:
    source = draw_scene(rng, ctx.combos, None if ctx.test else False)
    change, _ = random_change(source, rng, ctx.forbidden)
    target = apply_change(source, change)
    text = edit_instruction(change)
    return Item("image_editing", [user(I(ctx.store.image(source)), T(instruction("image_editing", instruction=text))),
                                  assistant(I(ctx.store.image(target)))],
                truth={"scene": scene_to_json(target), "source": scene_to_json(source), "instruction": text})


def utterance_text(rng: random.Random) -> str:
    """Something to say: a caption, a question or an answer sentence."""
    kind = rng.randrange(3)
    if kind == 0:
        return caption(draw_scene(rng, frozenset(), None, max_objects=2))
    question, answer = language.qa(rng)
    return question if kind == 1 else f"{ANSWER_MARKER} {answer}."


def asr(ctx: Context, rng: random.Random) -> Item:
    text = utterance_text(rng)
    audio = ctx.store.speech(text, rng.choice(ctx.voices))
    return Item("asr", [user(S(audio), T(instruction("asr"))), assistant(text)], truth={"text": text})


def tts(ctx: Context, rng: random.Random) -> Item:
    text = utterance_text(rng)
    audio = ctx.store.speech(text, rng.choice(ctx.voices))
    return Item("tts", [user(instruction("tts", text=text)), assistant(S(audio))], mode="voice",
                truth={"text": text, "reference": audio})


def speech_understanding(ctx: Context, rng: random.Random) -> Item:
    question, answer = language.qa(rng)
    audio = ctx.store.speech(question, rng.choice(ctx.voices))
    return Item("speech_understanding", [user(S(audio), T(instruction("speech_understanding"))), assistant(answer)],
                truth={"answer": answer, "question": question})


def speech_generation(ctx: Context, rng: random.Random) -> Item:
    question, answer = language.qa(rng)
    spoken = f"{ANSWER_MARKER} {answer}."
    audio = ctx.store.speech(spoken, rng.choice(ctx.voices))
    return Item("speech_generation", [user(question), assistant(S(audio))], mode="voice",
                truth={"answer": answer, "text": spoken, "question": question, "reference": audio})


def speech_to_speech(ctx: Context, rng: random.Random) -> Item:
    question, answer = language.qa(rng)
    spoken = f"{ANSWER_MARKER} {answer}."
    asked = ctx.store.speech(question, rng.choice(ctx.voices))
    reply = ctx.store.speech(spoken, rng.choice(ctx.voices))
    return Item("speech_to_speech", [user(S(asked)), assistant(S(reply))], mode="voice",
                truth={"answer": answer, "text": spoken, "question": question, "reference": reply})


def draw_clip(ctx: Context, rng: random.Random) -> Clip:
    """A clip from a scene; in training neither the scene nor the change uses a held-out combination."""
    scene = draw_scene(rng, ctx.combos, None if ctx.test else False)
    return sample_clip(scene, rng, ctx.cfg.min_video_frames, ctx.cfg.max_video_frames, ctx.forbidden)


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
                truth={"answer": answer, "question": question})


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
    """A multi-scene story: states and one sentence per state (a caption, then changes)."""
    states = [ctx.target_scene(rng, min_objects=1)]
    sentences = [caption(states[0])]
    for _ in range(ctx.cfg.story_steps - 1):
        change, _ = random_change(states[-1], rng, ctx.forbidden)
        states.append(apply_change(states[-1], change))
        sentences.append("Then " + narrate(change)[0].lower() + narrate(change)[1:])
    return states, sentences


def storytelling(ctx: Context, rng: random.Random) -> Item:
    states, sentences = story(ctx, rng)
    reply = []
    for i, (scene, sentence) in enumerate(zip(states, sentences)):
        reply += [T(sentence if i == 0 else " " + sentence), I(ctx.store.image(scene))]
    return Item("storytelling", [user(instruction("storytelling", story=" ".join(sentences))), assistant(*reply)],
                truth={"states": [scene_to_json(s) for s in states], "sentences": sentences})


def covt(ctx: Context, rng: random.Random) -> Item:
    source = draw_scene(rng, ctx.combos, None if ctx.test else False, min_objects=2)
    change, _ = random_change(source, rng, ctx.forbidden)
    after = apply_change(source, change)
    question, answer = covt_question(after, change)
    prompt = instruction("covt", instruction=edit_instruction(change), question=question)
    return Item("covt", [user(I(ctx.store.image(source)), T(prompt)), assistant(I(ctx.store.image(after)), T(answer))],
                truth={"answer": answer, "question": question, "scene": scene_to_json(after)})


def icl(ctx: Context, rng: random.Random) -> Item:
    kind = rng.choice(ICL_KINDS)
    shots = ctx.cfg.icl_shots if ctx.test else rng.randint(1, ctx.cfg.icl_shots)
    max_objects = 3 if kind == "count" else 1
    scenes = [draw_scene(rng, ctx.combos, None, max_objects=max_objects) for _ in range(shots + 1)]
    content = []
    for scene in scenes[:-1]:
        content += [I(ctx.store.image(scene)), T(ICL_ANSWER.format(answer=icl_answer(scene, kind)) + "\n")]
    content.append(I(ctx.store.image(scenes[-1])))
    answer = icl_answer(scenes[-1], kind)
    return Item("icl", [user(*content), assistant(ICL_ANSWER.format(answer=answer))],
                truth={"answer": answer, "kind": kind, "shots": shots})


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
    "speech_to_speech": speech_to_speech,
}
"""Table 10's tasks (toyworld analogues), chain-of-visual-thought and speech-to-speech."""

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

