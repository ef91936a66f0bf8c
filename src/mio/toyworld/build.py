"""`mio toyworld CONFIG --out DIR`: build the embedded world's corpus.

Writes media files and JSONL manifests (`mio.data.manifest` schema) for the six
pre-training data types, the SFT tasks and the evaluation suites:

    DIR/media/{image,chart,video,frame,speech}/<hash>.{png,mp4,wav}
    DIR/pretrain/<data_type>.jsonl       image_text_pair, language, image_text_interleaved,
                                         video_text_pair, video_text_interleaved, speech_text_pair
    DIR/sft/<task>.jsonl                 one per task of `mio.toyworld.tasks.SFT_TASKS`
    DIR/eval/<suite>.jsonl               test conversations (SFT schema, reference answers last)
    DIR/eval/<suite>.<arm>.jsonl         control arms: the same items asked another way, line by line
                                         (covt.direct, icl.question, icl.shuffled; `tasks.Item.arms`)
    DIR/eval/<suite>.truth.jsonl         ground truth per item id, for `mio eval`, with its `split`
    DIR/media_index.jsonl                what every media file shows (`mio.toyworld.overlap`)
    DIR/world.json                       config, held-out split and its check, counts, timings, manifest lists

Media paths inside manifests are relative to the manifest (`../media/...`). Media files are
named by a hash of their content description, so an image used twice is written once.
Every item is drawn from its own generator (`world.item_rng`), items are built in worker
processes (`workers`) and written in index order: the manifests and media are the same for
the same config whatever the number of workers.

Held out by construction: test items come from the keys the world reserves for them, training
items from the rest (`tasks.Context`). Before anything is written, the test items of each suite
are drawn without media (`_plan_eval`) so that no two are the same: an item that repeats an
earlier one is drawn again, and a suite whose reserved space runs out is a ValueError naming
the suite and the space. After the build, `overlap.check_overlap` compares the written test
items with the written training items and raises on any shared key; its counts go to world.json.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import time
from collections import Counter
from pathlib import Path

from PIL import Image

from mio.config import load, to_dict
from mio.data.encode import PRETRAIN_TYPES
from mio.toyworld import overlap, tasks
from mio.toyworld import text as language
from mio.toyworld.charts import Chart, render_chart
from mio.toyworld.scenes import COLORS, GRID, SHAPES, SIZES, Scene, caption, render
from mio.toyworld.speech_synth import DEFAULT_SAMPLE_RATE, Voice, synthesize
from mio.toyworld.tasks import Context, I, S, T, V
from mio.toyworld.text import SPACE_SIZES
from mio.toyworld.videos import Clip, describe_clip, narrate, scene_change, state_detector, write_clip
from mio.toyworld.world import (
    HeldOut,
    WorldConfig,
    assistant_voice,
    heldout_combo_set,
    item_rng,
    scene_key,
    split_voices,
)

log = logging.getLogger(__name__)

WORLD_FILE = "world.json"
SECTIONS = ("pretrain", "sft", "eval")
MEDIA_DIR = "media"
# Manifests sit one directory below the corpus root, so their media paths start with this.
MEDIA_PREFIX = f"../{MEDIA_DIR}"
HASH_CHARS = 16
JOBS_PER_CHUNK = 16
MAX_ITEM_DRAWS = 500
"""Draws of one test item that may repeat earlier items of its suite before the suite's
reserved space counts as too small."""
DISTINCT_SPACES = ("question", "scene", "chart")
"""A test item repeats an earlier one of its suite when its keys in these spaces are the same."""


def _digest(*parts: object) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:HASH_CHARS]


def _atomic(path: Path, write) -> None:
    """Write through a temporary name so concurrent workers never see half a file."""
    if path.exists():
        return
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    write(tmp)
    os.replace(tmp, path)


def _scene_json(scene: Scene) -> list[list]:
    return [list(o) for o in scene_key(scene)]


def _clip_json(clip: Clip) -> dict:
    c = clip.change
    obj = lambda o: None if o is None else [o.shape, o.color, o.size, o.row, o.col]  # noqa: E731
    return {"states": [_scene_json(s) for s in clip.states], "change": [c.kind, obj(c.before), obj(c.after)]}


class MediaStore:
    """Renders, synthesises and writes media under `root/media`, once per distinct medium,
    and notes what each file shows (`records`, for the media index). A `dry` store writes
    nothing: it only names the files and notes them."""

    def __init__(self, root: Path, cfg: WorldConfig, dry: bool = False):
        self.root, self.cfg, self.dry = Path(root), cfg, dry
        self.records: dict[str, dict] = {}
        """Path under the root -> media index entry, of the media asked for since `take`."""
        if not dry:
            for kind in ("image", "chart", "video", "frame", "speech"):
                (self.root / MEDIA_DIR / kind).mkdir(parents=True, exist_ok=True)

    def take(self) -> dict[str, dict]:
        """The records noted since the last call."""
        records, self.records = self.records, {}
        return records

    def _paths(self, kind: str, key: str, ext: str) -> tuple[Path, str]:
        name = f"{key}.{ext}"
        return self.root / MEDIA_DIR / kind / name, f"{MEDIA_PREFIX}/{kind}/{name}"

    def _write(self, path: Path, rel: str, entry: dict, write) -> None:
        self.records[f"{MEDIA_DIR}/{rel.removeprefix(MEDIA_PREFIX + '/')}"] = entry
        if not self.dry:
            _atomic(path, write)

    def image(self, scene: Scene) -> str:
        """A rendered scene (PNG)."""
        path, rel = self._paths("image", _digest(scene, self.cfg.image_size), "png")
        self._write(path, rel, {"kind": "image", "scene": _scene_json(scene)},
                    lambda p: render(scene, self.cfg.image_size).save(p, format="PNG"))
        return rel

    def chart(self, chart: Chart) -> str:
        """A rendered bar chart (PNG)."""
        path, rel = self._paths("chart", _digest(chart, self.cfg.image_size), "png")
        self._write(path, rel, {"kind": "chart", "bars": [list(b) for b in chart.bars]},
                    lambda p: render_chart(chart, self.cfg.image_size).save(p, format="PNG"))
        return rel

    def _video_file(self, clip: Clip) -> tuple[Path, str]:
        path, rel = self._paths("video", _digest(clip, self.cfg.image_size, self.cfg.frame_repeat, self.cfg.video_fps), "mp4")
        self._write(path, rel, {"kind": "video", **_clip_json(clip)},
                    lambda p: write_clip(clip, p, self.cfg.image_size, self.cfg.frame_repeat, self.cfg.video_fps))
        return path, rel

    def video(self, clip: Clip) -> str:
        """A clip as an MP4 file."""
        return self._video_file(clip)[1]

    def keyframes(self, clip: Clip) -> list[tuple[str, int]]:
        """The clip's MP4 read back and cut into keyframes by scene detection: (frame PNG,
        index of the state it shows) per keyframe, in time order. A dry store notes the clip
        and returns no keyframes."""
        from mio.media.video import keyframe_indices, read_video

        video, _ = self._video_file(clip)
        if self.dry:
            return []
        decoded = read_video(video)
        frames = []
        for index in keyframe_indices(decoded, self.cfg.max_video_frames, state_detector()):
            path, rel = self._paths("frame", f"{video.stem}-{index}", "png")
            picture = Image.fromarray(decoded.frames[index]).resize((self.cfg.image_size,) * 2, Image.Resampling.BICUBIC)
            state = min(len(clip.states) - 1, index // self.cfg.frame_repeat)
            self._write(path, rel, {"kind": "frame", "scene": _scene_json(clip.states[state])},
                        lambda p, picture=picture: picture.save(p, format="PNG"))
            frames.append((rel, state))
        return frames

    def speech(self, text: str, voice: Voice, about: Scene | None = None) -> str:
        """`text` spoken by `voice` (WAV, 16 kHz), seeded by the pair; `about`: the scene the
        text describes, if any (noted in the media index)."""
        import soundfile

        key = _digest(text, voice.id)
        path, rel = self._paths("speech", key, "wav")
        seed = int(key[:8], 16)
        entry = {"kind": "speech", "text": text, "voice": voice.id, "scene": None if about is None else _scene_json(about)}
        self._write(
            path, rel, entry,
            lambda p: soundfile.write(p, synthesize(text, voice, DEFAULT_SAMPLE_RATE, seed), DEFAULT_SAMPLE_RATE, format="WAV"),
        )
        return rel


# ---- pre-training documents ----

def _image_text_pair(ctx: Context, rng) -> list[dict]:
    scene = ctx.scene(rng, combo=False)
    return [I(ctx.store.image(scene)), T(caption(scene, seed=rng.randrange(2**31)))]


def _language(ctx: Context, rng) -> list[dict]:
    return [T(language.document(rng, ctx.allows_question))]


def _image_text_interleaved(ctx: Context, rng) -> list[dict]:
    states, sentences = tasks.story(ctx, rng)
    segments = []
    for i, (scene, sentence) in enumerate(zip(states, sentences)):
        segments += [T(sentence if i == 0 else " " + sentence), I(ctx.store.image(scene))]
    return segments


def _video_text_pair(ctx: Context, rng) -> list[dict]:
    clip = tasks.draw_clip(ctx, rng)
    return [V(ctx.store.video(clip)), T(describe_clip(clip))]


def _video_text_interleaved(ctx: Context, rng) -> list[dict]:
    """Keyframes of the clip's MP4 with narration of what changed since the last one."""
    clip = tasks.draw_clip(ctx, rng)
    segments, previous = [], None
    for frame, state in ctx.store.keyframes(clip):
        if previous is not None and clip.states[state] == clip.states[previous]:
            continue  # a spurious cut: the same state again
        if previous is None:
            sentence = caption(clip.states[state])
        else:
            sentence = " Then " + narrate(scene_change(clip.states[previous].key(), clip.states[state].key())).lower()
        segments += [T(sentence), I(frame)]
        previous = state
    return segments


def _speech_text_pair(ctx: Context, rng) -> list[dict]:
    text, about = tasks.utterance_text(ctx, rng)
    return [S(ctx.store.speech(text, rng.choice(ctx.voices), about)), T(text)]


PRETRAIN_BUILDERS = {
    "image_text_pair": _image_text_pair,
    "language": _language,
    "image_text_interleaved": _image_text_interleaved,
    "video_text_pair": _video_text_pair,
    "video_text_interleaved": _video_text_interleaved,
    "speech_text_pair": _speech_text_pair,
}
assert tuple(PRETRAIN_BUILDERS) == PRETRAIN_TYPES


def pretrain_count(cfg: WorldConfig, data_type: str) -> int:
    """Documents of a pre-training data type."""
    return {"image_text_pair": cfg.image_text_pairs, "language": cfg.language_docs,
            "image_text_interleaved": cfg.interleaved_docs, "video_text_pair": cfg.video_pairs,
            "video_text_interleaved": cfg.video_interleaved_docs, "speech_text_pair": cfg.speech_pairs}[data_type]


# ---- jobs (run in worker processes) ----

_WORKER: dict = {}


def _init_worker(cfg_dict: dict, root: str) -> None:
    cfg = load(WorldConfig, cfg_dict)
    store = MediaStore(Path(root), cfg)
    combos = heldout_combo_set(cfg)
    train, heldout = split_voices(cfg)
    assistant = assistant_voice(cfg)
    _WORKER["train"] = Context(cfg, store, combos, train, test=False, assistant=assistant)
    _WORKER["test"] = Context(cfg, store, combos, heldout, test=True, assistant=assistant)


def _item_rng(seed: int, section: str, name: str, index: int, draw: int):
    """The generator of an item's `draw`-th draw (draws after the first: test items that
    repeated an earlier item of their suite, `_plan_eval`)."""
    return item_rng(seed, section, name, index) if draw == 0 else item_rng(seed, section, name, index, "draw", draw)


def _test_item(ctx: Context, suite: str, index: int, draw: int) -> tasks.Item:
    ctx.slot = index
    item = tasks.EVAL_SUITES[suite](ctx, _item_rng(ctx.cfg.seed, "eval", suite, index, draw))
    item.task = suite
    return item


def _unseen(item: tasks.Item, keys: overlap.Keys) -> list[str]:
    """What of a test item is held out: the spaces of its keys (and a held-out combination)."""
    spaces = {s for s in ("question", "scene", "clip", "chart", "voice") if keys[s]}
    return sorted(spaces | ({"combination"} if item.split == "unseen_combination" else set()))


def _run_job(job: tuple[str, str, int, int]) -> tuple[dict, dict | None, dict[str, dict], dict[str, dict]]:
    """(manifest line, ground truth or None, control arm -> its manifest line, media index
    records) of one item."""
    section, name, index, draw = job
    item_id = f"{name}-{index:06d}"
    if section == "pretrain":
        ctx = _WORKER["train"]
        segments = PRETRAIN_BUILDERS[name](ctx, _item_rng(ctx.cfg.seed, section, name, index, draw))
        return {"type": name, "id": item_id, "segments": segments}, None, {}, ctx.store.take()
    if section == "sft":
        ctx = _WORKER["train"]
        item = tasks.SFT_TASKS[name](ctx, _item_rng(ctx.cfg.seed, section, name, index, draw))
        return item.manifest_line(item_id), None, {}, ctx.store.take()
    ctx = _WORKER["test"]
    item = _test_item(ctx, name, index, draw)
    line, records = item.manifest_line(item_id), ctx.store.take()
    split = item.split or tasks.SUITE_SPLITS[name]
    truth = {"id": item_id, **item.truth, "split": split, "unseen": _unseen(item, overlap.line_keys(line, records, section))}
    return line, truth, {arm: item.manifest_line(item_id, m) for arm, m in item.arms.items()}, records


def _space_name(space: str, key) -> str:
    """A key's space as error messages name it: `question:arithmetic`, `scene:1` (objects)."""
    if space == "question":
        return f"question:{key[0]}"
    return f"scene:{len(key)}" if space == "scene" else space


def _space_size(space: str, heldout: HeldOut) -> str:
    kind, _, detail = space.partition(":")
    share = heldout.share
    if kind == "question":
        held = sum(heldout.question(detail, key) for key in language.question_space(detail))
        return f"{held} of its {SPACE_SIZES[detail]} questions reserved for tests"
    if kind == "scene":
        n = int(detail)
        kinds = len(SHAPES) * len(COLORS) * len(SIZES)
        sets = math.comb(GRID * GRID, n) * kinds ** n
        return f"{sets} object sets of {n} object(s), about {share:.0%} of them reserved for tests"
    return f"about {share:.0%} of it reserved for tests"


def _plan_eval(cfg: WorldConfig, root: Path) -> dict[str, list[int]]:
    """Which draw of each test item to build (0 unless it repeated an earlier item of its
    suite): the suites are drawn here without media, in order. Raises ValueError naming the
    suite and the space when a suite asks for more distinct items than its reserved space holds."""
    combos = heldout_combo_set(cfg)
    ctx = Context(cfg, MediaStore(root, cfg, dry=True), combos, split_voices(cfg)[1], test=True,
                  assistant=assistant_voice(cfg))
    plan = {}
    for suite in tasks.EVAL_SUITES:
        seen, draws = set(), []
        for index in range(cfg.eval_count(suite)):
            repeats: Counter = Counter()
            for draw in range(MAX_ITEM_DRAWS):
                item = _test_item(ctx, suite, index, draw)
                keys = overlap.line_keys(item.manifest_line(""), ctx.store.take(), "eval")
                distinct = frozenset((space, key) for space in DISTINCT_SPACES for key in keys[space])
                if distinct not in seen:
                    seen.add(distinct)
                    draws.append(draw)
                    break
                repeats.update({_space_name(space, key) for space, key in distinct})
            else:
                space = repeats.most_common(1)[0][0] if repeats else "?"
                raise ValueError(
                    f"eval suite {suite!r}: space {space!r} is too small to hold out {cfg.eval_count(suite)} distinct test "
                    f"items ({_space_size(space, ctx.heldout)}); item {index} repeated an earlier one in all "
                    f"{MAX_ITEM_DRAWS} draws. Ask for fewer (eval_per_suite, eval_suite_counts) or raise heldout_share.")
        plan[suite] = draws
    return plan


def _jobs(cfg: WorldConfig, eval_draws: dict[str, list[int]]) -> dict[tuple[str, str], list[tuple[str, str, int, int]]]:
    plan = {}
    for data_type in PRETRAIN_TYPES:
        plan[("pretrain", data_type)] = [0] * pretrain_count(cfg, data_type)
    for task in tasks.SFT_TASKS:
        plan[("sft", task)] = [0] * cfg.sft_count(task)
    for suite in tasks.EVAL_SUITES:
        plan[("eval", suite)] = eval_draws[suite]
    return {key: [(key[0], key[1], i, d) for i, d in enumerate(draws)] for key, draws in plan.items() if draws}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def build(cfg: WorldConfig, out: str | Path | None = None, overwrite: bool = False) -> dict:
    """Build the corpus; returns (and writes as `world.json`) its summary."""
    cfg.validate()
    root = Path(out or cfg.out_dir)
    if (root / WORLD_FILE).exists() or any((root / s).exists() for s in SECTIONS):
        if not overwrite:
            raise FileExistsError(f"{root} already holds a world; pass --overwrite to rebuild it")
        for name in (*SECTIONS, MEDIA_DIR):
            shutil.rmtree(root / name, ignore_errors=True)
        (root / WORLD_FILE).unlink(missing_ok=True)
        (root / overlap.MEDIA_INDEX).unlink(missing_ok=True)
    started = time.monotonic()
    eval_draws = _plan_eval(cfg, root)  # before anything is written: a suite too big for its space fails here
    root.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {"plan_eval": round(time.monotonic() - started, 3)}
    plan = _jobs(cfg, eval_draws)
    total = sum(len(j) for j in plan.values())
    log.info("building %d items into %s with %d worker(s)", total, root, cfg.workers)

    cfg_dict = to_dict(cfg)
    if cfg.workers > 1:
        # spawn: eSpeak and PyAV hold process-wide state that must not be forked.
        pool = concurrent.futures.ProcessPoolExecutor(cfg.workers, multiprocessing.get_context("spawn"),
                                                      initializer=_init_worker, initargs=(cfg_dict, str(root)))
        run = lambda jobs: pool.map(_run_job, jobs, chunksize=JOBS_PER_CHUNK)  # noqa: E731
    else:
        _init_worker(cfg_dict, str(root))
        pool, run = None, lambda jobs: map(_run_job, jobs)  # noqa: E731
    counts: dict[str, dict[str, int]] = {s: {} for s in SECTIONS}
    manifests: dict[str, dict[str, str]] = {s: {} for s in SECTIONS}
    arms: dict[str, dict[str, str]] = {}
    splits: dict[str, dict[str, int]] = {}
    media_index: dict[str, dict] = {}
    done = 0
    try:
        for (section, name), jobs in plan.items():
            t0 = time.monotonic()
            results = list(run(jobs))
            path = root / section / f"{name}.jsonl"
            _write_jsonl(path, [line for line, *_ in results])
            for *_, records in results:
                media_index.update(records)
            if section == "eval":
                _write_jsonl(root / section / f"{name}.truth.jsonl", [truth for _, truth, *_ in results])
                splits[name] = dict(sorted(Counter(truth["split"] for _, truth, *_ in results).items()))
                for arm in sorted(results[0][2]):
                    if any(set(item_arms) != set(results[0][2]) for _, _, item_arms, _ in results):
                        raise RuntimeError(f"eval suite {name}: items differ in their control arms")
                    arm_path = root / section / f"{name}.{arm}.jsonl"
                    _write_jsonl(arm_path, [item_arms[arm] for _, _, item_arms, _ in results])
                    arms.setdefault(name, {})[arm] = str(arm_path.relative_to(root))
            counts[section][name] = len(results)
            manifests[section][name] = str(path.relative_to(root))
            seconds[f"{section}/{name}"] = round(time.monotonic() - t0, 3)
            done += len(jobs)
            log.info("[%d/%d] %s/%s: %d items in %.1fs", done, total, section, name, len(jobs), seconds[f"{section}/{name}"])
    finally:
        if pool is not None:
            pool.shutdown()
    _write_jsonl(root / overlap.MEDIA_INDEX, [{"path": path, **media_index[path]} for path in sorted(media_index)])
    t0 = time.monotonic()
    checked = overlap.check_overlap(root)  # raises on any test key found in training
    seconds["check_overlap"] = round(time.monotonic() - t0, 3)
    log.info("held-out check: %d test items against %d training items, no shared key (%s)", checked["test_items"],
             checked["train_items"], ", ".join(f"{s} {c['test']}/{c['train']}" for s, c in checked["spaces"].items()))
    train_voices, heldout_voices = split_voices(cfg)
    summary = {
        "config": cfg_dict,
        "heldout_combos": sorted(cfg.heldout_combos),
        "voices": {"train": [v.id for v in train_voices], "heldout": [v.id for v in heldout_voices],
                   "assistant": getattr(assistant_voice(cfg), "id", None)},
        "heldout": {"share": cfg.heldout_share, "splits": splits, "check": checked},
        "counts": counts,
        "media": {kind: len(list((root / MEDIA_DIR / kind).iterdir())) for kind in sorted(os.listdir(root / MEDIA_DIR))},
        "manifests": manifests,
        "arms": arms,
        "seconds": {"total": round(time.monotonic() - started, 3), **seconds},
    }
    (root / WORLD_FILE).write_text(json.dumps(summary, indent=1))
    log.info("built %d items (%s media files) in %.1fs: %s", total, sum(summary["media"].values()),
             summary["seconds"]["total"], root)
    return summary
