"""The held-out check of a built world: no key of a test item occurs in training.

`mio toyworld` draws test items from the keys the world reserves for them and training items
from the rest (`mio.toyworld.world.HeldOut`); this module checks the result on the written
files, at the end of every build (`check_overlap`). It reads every manifest and the media
index (`media_index.jsonl`: what each media file shows, written by the builder) and collects
each item's keys per space:

    prompt      the normalised text of a conversation's user turns, when they hold no medium
    question    questions and arithmetic facts in any text or spoken sentence
                (`mio.toyworld.text.question_keys`: `3 plus 4 is 7.` is the key of `What is 3 plus 4?`)
    scene       object sets (`Scene.key`) of pictures, video states and keyframes, and of the
                scene a spoken caption describes
    clip        video clips: the object sets of their states and the change
    chart       bar charts: their bars
    utterance   (normalised spoken text, voice)
    voice       voices

except the utterance and voice of what the assistant says: it speaks with one voice
(`WorldConfig.assistant_voice`) in training and test alike, and `The answer is 3.` in that
voice is no more a test item than the letter `B` is.

Training keys are those of the pre-training documents and the SFT conversations; test keys
those of the evaluation suites and their control arms. Any key in both is an error.
Normalised text: lowercase, whitespace collapsed (`text.normalize`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from mio.toyworld.text import normalize, question_keys

MEDIA_INDEX = "media_index.jsonl"
"""The media index, under the world's root: one line per media file, `{"path": ..., "kind": ...}`
and what the file shows (`scene`, `states` and `change`, `bars`, `text` and `voice`)."""
SPACES = ("prompt", "question", "scene", "clip", "chart", "utterance", "voice")
TRAIN_SECTIONS = ("pretrain", "sft")
TEST_SECTION = "eval"
MEDIA_KINDS = ("image", "video", "speech")
ASSISTANT_EXEMPT = ("utterance", "voice")
"""Spaces not checked for the assistant's own spoken replies (see the module docstring)."""
EXAMPLES = 3
"""Overlapping keys quoted per space when the check fails."""

Keys = dict[str, set]


def _scene(objects) -> tuple:
    return tuple(sorted(tuple(o) for o in objects))


def content_keys(content: dict) -> Keys:
    """The keys of one media file from its media index entry."""
    keys: Keys = {space: set() for space in SPACES}
    kind = content["kind"]
    if kind in ("image", "frame"):
        keys["scene"].add(_scene(content["scene"]))
    elif kind == "video":
        states = tuple(_scene(s) for s in content["states"])
        keys["scene"].update(states)
        keys["clip"].add((states, json.dumps(content["change"])))
    elif kind == "chart":
        keys["chart"].add(tuple(tuple(b) for b in content["bars"]))
    elif kind == "speech":
        keys["utterance"].add((normalize(content["text"]), content["voice"]))
        keys["voice"].add(content["voice"])
        keys["question"].update(question_keys(content["text"]))
        if content.get("scene") is not None:
            keys["scene"].add(_scene(content["scene"]))
    return keys


def _parts(line: dict) -> Iterator[tuple[str, dict | str]]:
    """(role, segment) of a manifest line: `document` for pre-training segments."""
    if "segments" in line:
        for seg in line["segments"]:
            yield "document", seg
        return
    for message in line["messages"]:
        content = message["content"]
        for seg in [{"text": content}] if isinstance(content, str) else content:
            yield message["role"], seg


def line_keys(line: dict, media: dict[str, dict], base: str) -> Keys:
    """The keys of one manifest line. `media`: media index (path under the world's root ->
    entry); `base`: the manifest's directory under the root (media paths are relative to it)."""
    keys: Keys = {space: set() for space in SPACES}
    prompt, prompt_has_media = [], False
    for role, seg in _parts(line):
        if "text" in seg:
            keys["question"].update(question_keys(seg["text"]))
            if role == "user":
                prompt.append(seg["text"])
            continue
        kind = next(k for k in MEDIA_KINDS if k in seg)
        prompt_has_media |= role == "user"
        paths = seg[kind] if isinstance(seg[kind], list) else [seg[kind]]
        for path in paths:
            entry = media.get(os.path.normpath(os.path.join(base, path)))
            if entry is None:
                raise ValueError(f"{line.get('id')}: {path} is not in the media index")
            for space, found in content_keys(entry).items():
                if role != "assistant" or space not in ASSISTANT_EXEMPT:
                    keys[space] |= found
    if "messages" in line and prompt and not prompt_has_media:
        keys["prompt"].add(normalize(" ".join(prompt)))
    return keys


def read_media_index(root: str | Path) -> dict[str, dict]:
    """Path under the root -> media index entry."""
    entries = {}
    with open(Path(root) / MEDIA_INDEX, encoding="utf-8") as f:
        for text in f:
            if text.strip():
                entry = json.loads(text)
                entries[entry.pop("path")] = entry
    return entries


def _manifests(root: Path, section: str) -> list[Path]:
    return sorted(p for p in (root / section).glob("*.jsonl") if not p.name.endswith(".truth.jsonl"))


def _collect(root: Path, sections, media: dict[str, dict]) -> tuple[dict[str, dict], int]:
    """Space -> key -> where it first occurs (`manifest#id`), and the number of items."""
    found: dict[str, dict] = {space: {} for space in SPACES}
    items = 0
    for section in sections:
        for path in _manifests(root, section):
            with open(path, encoding="utf-8") as f:
                for n, text in enumerate(f, 1):
                    if not text.strip():
                        continue
                    line = json.loads(text)
                    where = f"{section}/{path.name}#{line.get('id', n)}"
                    items += 1
                    for space, keys in line_keys(line, media, section).items():
                        for key in keys:
                            found[space].setdefault(key, where)
    return found, items


def check_overlap(root: str | Path) -> dict:
    """Compare every test item of the world at `root` with every training item, space by
    space; raise ValueError naming the overlapping keys and where they occur, or return the
    counts checked: {"spaces": {space: {"test": keys, "train": keys, "overlap": 0}},
    "test_items": n, "train_items": n}."""
    root = Path(root)
    media = read_media_index(root)
    train, train_items = _collect(root, TRAIN_SECTIONS, media)
    test, test_items = _collect(root, (TEST_SECTION,), media)
    spaces, problems = {}, []
    for space in SPACES:
        shared = [key for key in test[space] if key in train[space]]
        spaces[space] = {"test": len(test[space]), "train": len(train[space]), "overlap": len(shared)}
        for key in shared[:EXAMPLES]:
            problems.append(f"  {space} {key!r}: {test[space][key]} and {train[space][key]}")
    if problems:
        counts = ", ".join(f"{s} {c['overlap']}" for s, c in spaces.items() if c["overlap"])
        raise ValueError(f"held-out check failed for {root}: test keys occur in training ({counts}):\n" + "\n".join(problems))
    return {"spaces": spaces, "test_items": test_items, "train_items": train_items}
