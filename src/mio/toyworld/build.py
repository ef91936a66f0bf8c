"""`mio toyworld CONFIG --out DIR`: build the embedded world's corpus.

Writes media files and JSONL manifests (`mio.data.manifest` schema) for the six
pre-training data types, the SFT tasks and the evaluation suites:

    DIR/media/{image,chart,video,frame,speech}/<hash>.{png,mp4,wav}
    DIR/pretrain/<data_type>.jsonl       image_text_pair, language, image_text_interleaved,
                                         video_text_pair, video_text_interleaved, speech_text_pair
    DIR/sft/<task>.jsonl                 one per task of `mio.toyworld.tasks.SFT_TASKS`
    DIR/eval/<suite>.jsonl               test conversations (SFT schema, reference answers last)
    DIR/eval/<suite>.truth.jsonl         ground truth per item id, for `mio eval`
    DIR/world.json                       config, held-out split, counts, timings, manifest lists

Media paths inside manifests are relative to the manifest (`../media/...`). Media files are
named by a hash of their content description, so an image used twice is written once.
Every item is drawn from its own generator (`world.item_rng`), items are built in worker
processes (`workers`) and written in index order: the manifests and media are the same for
the same config whatever the number of workers.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import time
from pathlib import Path

from PIL import Image

from mio.config import load, to_dict
from mio.data.encode import PRETRAIN_TYPES
from mio.toyworld import tasks
from mio.toyworld import text as language
from mio.toyworld.charts import Chart, render_chart
from mio.toyworld.scenes import Scene, caption, render
from mio.toyworld.speech_synth import DEFAULT_SAMPLE_RATE, Voice, synthesize
from mio.toyworld.tasks import Context, I, S, T, V
from mio.toyworld.videos import Clip, describe_clip, narrate, scene_change, write_clip
from mio.toyworld.world import WorldConfig, draw_scene, heldout_combo_set, item_rng, split_voices

log = logging.getLogger(__name__)

WORLD_FILE = "world.json"
SECTIONS = ("pretrain", "sft", "eval")
MEDIA_DIR = "media"
# Manifests sit one directory below the corpus root, so their media paths start with this.
MEDIA_PREFIX = f"../{MEDIA_DIR}"
HASH_CHARS = 16
JOBS_PER_CHUNK = 16
# Scene detection for keyframes: a toyworld change (one small object recoloured) moves the
# content score by only a few units, far below the detector's default; measured on clips
# read back from MP4, 1.0 finds every state change and no false cut.
KEYFRAME_THRESHOLD = 1.0
KEYFRAME_MIN_SCENE = 2


def _digest(*parts: object) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:HASH_CHARS]


def _atomic(path: Path, write) -> None:
    """Write through a temporary name so concurrent workers never see half a file."""
    if path.exists():
        return
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    write(tmp)
    os.replace(tmp, path)


class MediaStore:
    """Renders, synthesises and writes media under `root/media`, once per distinct medium."""

    def __init__(self, root: Path, cfg: WorldConfig):
        self.root, self.cfg = Path(root), cfg
        for kind in ("image", "chart", "video", "frame", "speech"):
            (self.root / MEDIA_DIR / kind).mkdir(parents=True, exist_ok=True)

    def _paths(self, kind: str, key: str, ext: str) -> tuple[Path, str]:
        name = f"{key}.{ext}"
        return self.root / MEDIA_DIR / kind / name, f"{MEDIA_PREFIX}/{kind}/{name}"

    def image(self, scene: Scene) -> str:
        """A rendered scene (PNG)."""
        path, rel = self._paths("image", _digest(scene, self.cfg.image_size), "png")
        _atomic(path, lambda p: render(scene, self.cfg.image_size).save(p, format="PNG"))
        return rel

    def chart(self, chart: Chart) -> str:
        """A rendered bar chart (PNG)."""
        path, rel = self._paths("chart", _digest(chart, self.cfg.image_size), "png")
        _atomic(path, lambda p: render_chart(chart, self.cfg.image_size).save(p, format="PNG"))
        return rel

    def _video_file(self, clip: Clip) -> tuple[Path, str]:
        path, rel = self._paths("video", _digest(clip, self.cfg.image_size, self.cfg.frame_repeat, self.cfg.video_fps), "mp4")
        _atomic(path, lambda p: write_clip(clip, p, self.cfg.image_size, self.cfg.frame_repeat, self.cfg.video_fps))
        return path, rel

    def video(self, clip: Clip) -> str:
        """A clip as an MP4 file."""
        return self._video_file(clip)[1]

    def keyframes(self, clip: Clip) -> list[tuple[str, int]]:
        """The clip's MP4 read back and cut into keyframes by scene detection: (frame PNG,
        index of the state it shows) per keyframe, in time order."""
        from mio.media.video import keyframe_indices, make_detector, read_video

        video, _ = self._video_file(clip)
        decoded = read_video(video)
        detector = make_detector("content", KEYFRAME_THRESHOLD, KEYFRAME_MIN_SCENE)
        frames = []
        for index in keyframe_indices(decoded, self.cfg.max_video_frames, detector):
            path, rel = self._paths("frame", f"{video.stem}-{index}", "png")
            picture = Image.fromarray(decoded.frames[index]).resize((self.cfg.image_size,) * 2, Image.Resampling.BICUBIC)
            _atomic(path, lambda p, picture=picture: picture.save(p, format="PNG"))
            frames.append((rel, min(len(clip.states) - 1, index // self.cfg.frame_repeat)))
        return frames

    def speech(self, text: str, voice: Voice) -> str:
        """`text` spoken by `voice` (WAV, 16 kHz), seeded by the pair."""
        import soundfile

        key = _digest(text, voice.id)
        path, rel = self._paths("speech", key, "wav")
        seed = int(key[:8], 16)
        _atomic(
            path,
            lambda p: soundfile.write(p, synthesize(text, voice, DEFAULT_SAMPLE_RATE, seed), DEFAULT_SAMPLE_RATE, format="WAV"),
        )
        return rel


# ---- pre-training documents ----

def _image_text_pair(ctx: Context, rng) -> list[dict]:
    scene = draw_scene(rng, ctx.combos, heldout=False)
    return [I(ctx.store.image(scene)), T(caption(scene, seed=rng.randrange(2**31)))]


def _language(ctx: Context, rng) -> list[dict]:
    return [T(language.document(rng))]


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
    text = tasks.utterance_text(rng)
    return [S(ctx.store.speech(text, rng.choice(ctx.voices))), T(text)]


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
    _WORKER["train"] = Context(cfg, store, combos, train, test=False)
    _WORKER["test"] = Context(cfg, store, combos, heldout, test=True)


def _run_job(job: tuple[str, str, int]) -> tuple[dict, dict | None]:
    """(manifest line, ground truth or None) of one item."""
    section, name, index = job
    seed = _WORKER["train"].cfg.seed
    rng = item_rng(seed, section, name, index)
    item_id = f"{name}-{index:06d}"
    if section == "pretrain":
        segments = PRETRAIN_BUILDERS[name](_WORKER["train"], rng)
        return {"type": name, "id": item_id, "segments": segments}, None
    if section == "sft":
        return tasks.SFT_TASKS[name](_WORKER["train"], rng).manifest_line(item_id), None
    item = tasks.EVAL_SUITES[name](_WORKER["test"], rng)
    item.task = name
    return item.manifest_line(item_id), {"id": item_id, **item.truth}


def _jobs(cfg: WorldConfig) -> dict[tuple[str, str], list[tuple[str, str, int]]]:
    plan = {}
    for data_type in PRETRAIN_TYPES:
        plan[("pretrain", data_type)] = pretrain_count(cfg, data_type)
    for task in tasks.SFT_TASKS:
        plan[("sft", task)] = cfg.sft_count(task)
    for suite in tasks.EVAL_SUITES:
        plan[("eval", suite)] = cfg.eval_per_suite
    return {key: [(key[0], key[1], i) for i in range(n)] for key, n in plan.items() if n > 0}


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
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    plan = _jobs(cfg)
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
    seconds: dict[str, float] = {}
    manifests: dict[str, dict[str, str]] = {s: {} for s in SECTIONS}
    done = 0
    try:
        for (section, name), jobs in plan.items():
            t0 = time.monotonic()
            results = list(run(jobs))
            path = root / section / f"{name}.jsonl"
            _write_jsonl(path, [line for line, _ in results])
            if section == "eval":
                _write_jsonl(root / section / f"{name}.truth.jsonl", [truth for _, truth in results])
            counts[section][name] = len(results)
            manifests[section][name] = str(path.relative_to(root))
            seconds[f"{section}/{name}"] = round(time.monotonic() - t0, 3)
            done += len(jobs)
            log.info("[%d/%d] %s/%s: %d items in %.1fs", done, total, section, name, len(jobs), seconds[f"{section}/{name}"])
    finally:
        if pool is not None:
            pool.shutdown()
    train_voices, heldout_voices = split_voices(cfg)
    summary = {
        "config": cfg_dict,
        "heldout_combos": sorted(cfg.heldout_combos),
        "voices": {"train": [v.id for v in train_voices], "heldout": [v.id for v in heldout_voices]},
        "counts": counts,
        "media": {kind: len(list((root / MEDIA_DIR / kind).iterdir())) for kind in sorted(os.listdir(root / MEDIA_DIR))},
        "manifests": manifests,
        "seconds": {"total": round(time.monotonic() - started, 3), **seconds},
    }
    (root / WORLD_FILE).write_text(json.dumps(summary, indent=1))
    log.info("built %d items (%s media files) in %.1fs: %s", total, sum(summary["media"].values()),
             summary["seconds"]["total"], root)
    return summary
