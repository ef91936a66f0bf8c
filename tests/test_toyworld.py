"""The embedded world: config and held-out split, text, charts, video clips and their judge,
SFT task builders, and the corpus build (manifests `mio prepare` reads, determinism)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from mio.cli.main import main
from mio.config import ConfigError, load
from mio.data.encode import PRETRAIN_TYPES
from mio.data.manifest import parse_line, read_manifest
from mio.judges import video as video_judge
from mio.toyworld import build, tasks, text
from mio.toyworld.charts import chart_qa, render_chart, sample_chart
from mio.toyworld.scenes import COLORS, SceneSampler
from mio.toyworld.videos import KINDS, OTHER, describe_clip, narrate, render_clip, sample_clip, scene_change
from mio.toyworld.world import WorldConfig, draw_scene, heldout_combo_set, item_rng, split_voices, uses_combo

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "toyworld"
TINY = CONFIGS / "tiny.toml"


@pytest.mark.parametrize("name", ["default.toml", "tiny.toml"])
def test_shipped_configs_load(name):
    cfg = load(WorldConfig, CONFIGS / name)
    assert len(heldout_combo_set(cfg)) == len(cfg.heldout_combos) > 0


def test_config_rejects_unknown_combinations_and_keys():
    with pytest.raises(ConfigError, match="heldout_combos"):
        load(WorldConfig, {"heldout_combos": ["pink star"]})
    with pytest.raises(ConfigError, match="unknown key"):
        load(WorldConfig, {"image_pairs": 3})
    with pytest.raises(ConfigError, match="unknown task 'image_qna'"):
        load(WorldConfig, {"sft_task_counts": {"image_qna": 600}})


def test_heldout_split_of_scenes_and_voices():
    combos = heldout_combo_set(WorldConfig())
    rng = random.Random(0)
    assert not any(uses_combo(draw_scene(rng, combos, heldout=False), combos) for _ in range(200))
    assert all(uses_combo(draw_scene(rng, combos, heldout=True), combos) for _ in range(50))
    train, heldout = split_voices(WorldConfig(train_voices=8, heldout_voices=3))
    assert len(train) == 8 and len(heldout) == 3 and not {v.id for v in train} & {v.id for v in heldout}


def test_item_rng_is_stable_and_independent():
    assert item_rng(0, "sft", "asr", 3).random() == item_rng(0, "sft", "asr", 3).random()
    assert item_rng(0, "sft", "asr", 3).random() != item_rng(0, "sft", "asr", 4).random()


def test_language_answers_are_right():
    rng = random.Random(1)
    for _ in range(100):
        q, a = text.qa(rng, "arithmetic")
        x, op, y = q.removeprefix("What is ").rstrip("?").split()
        assert int(a) == (int(x) + int(y) if op == "plus" else int(x) - int(y))
    mcq_rng = random.Random(2)
    for _ in range(200):  # every family, colour answers included: four distinct options
        item = text.mcq(mcq_rng)
        layout = text.format_mcq(item)
        assert layout.endswith("\nAnswer:") and len(set(item.options)) == 4, layout
        assert f"{item.letter}. {item.options[item.answer]}" in layout
    assert text.document(random.Random(3)).strip()
    assert text.plural("cross") == "crosses" and text.plural("circle") == "circles"


def test_charts_render_their_bars_and_answer_questions():
    rng = random.Random(4)
    for _ in range(20):
        chart = sample_chart(rng)
        pixels = np.asarray(render_chart(chart))
        assert pixels.shape == (64, 64, 3)
        for color, _ in chart.bars:  # every bar's colour is drawn
            assert (np.abs(pixels.astype(int) - COLORS[color]).sum(-1) == 0).any()
        q, a = chart_qa(chart, rng)
        if "tallest" in q:
            assert chart.value(a) == max(v for _, v in chart.bars)


def test_clips_hold_one_change_that_the_states_show():
    rng = random.Random(5)
    kinds = set()
    for _ in range(150):
        clip = sample_clip(SceneSampler(seed=rng.randrange(1000), min_objects=2).sample(), rng, 4, 8)
        assert 4 <= len(clip.states) <= 8
        assert scene_change(clip.states[0].key(), clip.states[-1].key()) == clip.change
        assert all(scene_change(a.key(), b.key()).kind != OTHER for a, b in zip(clip.states, clip.states[1:]))
        assert narrate(clip.change)[1:] in describe_clip(clip)
        kinds.add(clip.change.kind)
    assert kinds == set(KINDS)
    assert len(render_clip(clip)) == len(clip.states)


def test_video_judge_reads_clips_back_from_mp4():
    report = video_judge.validate(n=8, seed=11)
    assert report["n"] == 8 and report["change_accuracy"] >= 0.85 and report["frame_exact"] >= 0.9, report
    clip = sample_clip(SceneSampler(seed=3, min_objects=2).sample(), random.Random(3), 4, 4)
    frames = render_clip(clip)
    assert video_judge.judge_clip(clip, frames)["change_correct"] == 1.0
    assert video_judge.judge_clip(clip, frames[:1])["change_correct"] == 0.0  # a still picture is no change
    assert video_judge.judge_clip(clip, [])["frame_exact"] == 0.0


class RecordingStore:
    """A media store that writes nothing and remembers what it was asked for."""

    def __init__(self):
        self.scenes, self.voices = [], []

    def image(self, scene):
        self.scenes.append(scene)
        return f"../media/image/{len(self.scenes)}.png"

    def chart(self, chart):
        return "../media/chart/0.png"

    def video(self, clip):
        self.scenes.extend(clip.states)
        return "../media/video/0.mp4"

    def speech(self, text_, voice):
        self.voices.append(voice)
        return f"../media/speech/{len(self.voices)}.wav"


def _context(test: bool) -> tuple[tasks.Context, RecordingStore]:
    cfg = WorldConfig(train_voices=4, heldout_voices=2)
    train, heldout = split_voices(cfg)
    store = RecordingStore()
    return tasks.Context(cfg, store, heldout_combo_set(cfg), heldout if test else train, test), store


@pytest.mark.parametrize("test_split", [False, True])
def test_every_task_and_suite_builds_valid_manifest_lines(test_split):
    ctx, store = _context(test_split)
    builders = tasks.EVAL_SUITES if test_split else tasks.SFT_TASKS
    assert len(tasks.SFT_TASKS) >= 18 and len(tasks.EVAL_SUITES) == 18
    for name, builder in builders.items():
        for i in range(3):
            item = builder(ctx, item_rng(0, name, i))
            line = item.manifest_line(f"{name}-{i}")
            record = parse_line(json.dumps(line), Path("."), name)
            assert record.messages[-1][0] == "assistant", name
            json.dumps(item.truth)  # ground truth is JSON
    voices = {v.id for v in ctx.voices}
    assert store.voices and all(v.id in voices for v in store.voices)


def test_training_never_generates_heldout_combinations():
    ctx, store = _context(test=False)
    for name in ("image_generation", "image_editing", "video_generation", "storytelling", "covt"):
        for i in range(30):
            store.scenes.clear()
            item = tasks.SFT_TASKS[name](ctx, item_rng(0, name, i))
            targets = store.scenes if name != "image_editing" else store.scenes[1:]
            assert not any(uses_combo(s, ctx.combos) for s in targets), (name, item.truth)
    test_ctx, _ = _context(test=True)
    heldout = [tasks.image_generation(test_ctx, item_rng(1, i)).truth["heldout"] for i in range(40)]
    assert 0 < sum(heldout) < 40


def test_captions_answers_and_reasoning_agree_with_the_scene():
    rng = random.Random(6)
    for _ in range(50):
        scene = SceneSampler(seed=rng.randrange(10**6)).sample()
        question, steps, answer = tasks.reasoning_qa(scene, rng)
        assert steps.endswith(f"The answer is {answer}.")
        q, a = tasks.scene_qa(scene, rng)
        if q == "How many objects are there?":
            assert a == str(len(scene.objects))


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    assert main(["toyworld", str(TINY), "--out", str(out)]) == 0
    return out


def test_tiny_world_writes_every_manifest_with_existing_media(tiny_world):
    summary = json.loads((tiny_world / build.WORLD_FILE).read_text())
    cfg = load(WorldConfig, TINY)
    assert set(summary["manifests"]["pretrain"]) == set(PRETRAIN_TYPES)
    assert set(summary["manifests"]["sft"]) == set(tasks.SFT_TASKS)
    assert set(summary["manifests"]["eval"]) == set(tasks.EVAL_SUITES)
    for section in build.SECTIONS:
        for name, rel in summary["manifests"][section].items():
            records = list(read_manifest(tiny_world / rel))
            assert len(records) == summary["counts"][section][name] > 0
            for record in records:
                assert all(p.is_file() for ref in record.media() for p in ref.paths), record.where
    truths = (tiny_world / "eval" / "asr.truth.jsonl").read_text().splitlines()
    assert len(truths) == cfg.eval_per_suite and json.loads(truths[0])["text"]
    for record in read_manifest(tiny_world / "pretrain" / "video_text_interleaved.jsonl"):
        assert sum(isinstance(p, str) for p in record.segments) >= 2  # keyframes with narration
    assert summary["seconds"]["total"] > 0
    with pytest.raises(FileExistsError):
        build.build(cfg, tiny_world)


def test_build_is_deterministic_across_worker_counts(tiny_world, tmp_path):
    cfg = load(WorldConfig, TINY, {"workers": 2, "image_text_pairs": 2, "language_docs": 1, "speech_pairs": 1})
    build.build(cfg, tmp_path)
    for rel in ("pretrain/image_text_pair.jsonl", "sft/image_generation.jsonl", "eval/covt.jsonl", "eval/covt.truth.jsonl"):
        ours = (tmp_path / rel).read_text().splitlines()
        theirs = (tiny_world / rel).read_text().splitlines()
        assert ours == theirs[: len(ours)], rel
    first = json.loads((tmp_path / "sft/image_generation.jsonl").read_text().splitlines()[0])
    image = first["messages"][-1]["content"][0]["image"]
    assert (tmp_path / "sft" / image).read_bytes() == (tiny_world / "sft" / image).read_bytes()


def test_world_config_names_every_sft_task_builder():
    from mio.toyworld.world import SFT_TASK_NAMES

    assert tuple(tasks.SFT_TASKS) == SFT_TASK_NAMES
