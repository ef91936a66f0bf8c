"""The embedded world: config and held-out split, text, charts, video clips and their judge,
SFT task builders, and the corpus build (manifests `mio prepare` reads, determinism)."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from mio.cli.main import main
from mio.config import ConfigError, load
from mio.data.encode import PRETRAIN_TYPES
from mio.data.manifest import parse_line, read_manifest
from mio.judges import video as video_judge
from mio.prompts import ICL_ANSWER, instruction
from mio.toyworld import build, overlap, tasks, text
from mio.toyworld.charts import chart_qa, render_chart, sample_chart
from mio.toyworld.scenes import COLORS, SceneSampler
from mio.toyworld.videos import KINDS, OTHER, describe_clip, narrate, render_clip, sample_clip, scene_change
from mio.toyworld.world import WorldConfig, draw_scene, heldout_combo_set, item_rng, scene_key, split_voices, uses_combo

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

    def speech(self, text_, voice, about=None):
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


def test_storytelling_numbers_its_sentences_and_puts_a_number_between_pictures():
    ctx, _ = _context(test=False)
    for i in range(10):
        item = tasks.storytelling(ctx, item_rng(4, i))
        prompt, reply = item.messages[0]["content"], item.messages[1]["content"]
        sentences = item.truth["sentences"]
        assert prompt.endswith(" ".join(f"{k}. {s}" for k, s in enumerate(sentences, 1)))
        # a number before every picture, so that no two pictures touch (that would be a video)
        assert [p.get("text", "image").strip() for p in reply] == [x for k in range(1, len(sentences) + 1)
                                                                    for x in (f"{k}.", "image")]


def test_captions_answers_and_reasoning_agree_with_the_scene():
    rng = random.Random(6)
    for _ in range(50):
        scene = SceneSampler(seed=rng.randrange(10**6)).sample()
        question, steps, answer = tasks.reasoning_qa(scene, rng)
        assert steps.endswith(f"The answer is {answer}.")
        q, a, kind = tasks.scene_qa(scene, rng)
        assert (kind == "count") == (q == "How many objects are there?")
        if kind == "count":
            assert a == str(len(scene.objects))
        if kind == "exists":
            assert a in ("yes", "no")


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


def test_build_is_deterministic_across_worker_counts_and_item_counts(tiny_world, tmp_path):
    # Fewer items of a kind are the first items of the bigger build: what the demo's text
    # tokenizer relies on when it reads only the first conversations of each SFT task.
    cfg = load(WorldConfig, TINY, {"workers": 2, "image_text_pairs": 2, "language_docs": 1, "speech_pairs": 1,
                                   "sft_per_task": 1})
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


def test_builders_draw_on_their_side_of_the_split():
    for test_split in (False, True):
        ctx, store = _context(test_split)
        builders = tasks.EVAL_SUITES if test_split else tasks.SFT_TASKS
        for name, builder in builders.items():
            for i in range(5):
                store.scenes.clear()
                builder(ctx, item_rng(0, name, i))
                assert all(ctx.heldout.scene(s) == test_split for s in store.scenes), (name, i)
    # questions: a test asks only reserved ones, in the families that can be held out; training never
    train, _ = _context(False)
    test, _ = _context(True)
    for i in range(200):
        question = test.question(item_rng(1, i))[0]
        (kind, key), = text.question_keys(question)
        assert kind in text.HOLDABLE_KINDS and test.heldout.question(kind, key)
        document = text.document(item_rng(2, i), train.allows_question)
        assert not any(train.heldout.question(*k) for k in text.question_keys(document)), document
    assert text.question_keys("Question: What is 3 plus 4? Answer: 7. 13 plus 4 is 17.") == {
        ("arithmetic", "what is 3 plus 4?"), ("arithmetic", "what is 13 plus 4?")}


def test_overlap_check_passes_and_catches_a_test_item_in_training(tiny_world, tmp_path):
    summary = json.loads((tiny_world / build.WORLD_FILE).read_text())
    check = summary["heldout"]["check"]
    assert check == overlap.check_overlap(tiny_world)
    assert all(c["overlap"] == 0 for c in check["spaces"].values())
    assert all(check["spaces"][s]["test"] > 0 and check["spaces"][s]["train"] > 0 for s in overlap.SPACES), check
    copy = tmp_path / "world"
    shutil.copytree(tiny_world, copy)
    test_line = (copy / "eval" / "image_qa.jsonl").read_text().splitlines()[0]
    with open(copy / "sft" / "image_qa.jsonl", "a") as f:  # a test item copied into SFT
        f.write(test_line + "\n")
    with pytest.raises(ValueError, match="held-out check failed.*scene"):
        overlap.check_overlap(copy)
    shutil.copy(tiny_world / "sft" / "image_qa.jsonl", copy / "sft" / "image_qa.jsonl")
    overlap.check_overlap(copy)
    question = json.loads((copy / "eval" / "text_mcq.truth.jsonl").read_text().splitlines()[0])["layout"].split("\n")[0]
    with open(copy / "pretrain" / "language.jsonl", "a") as f:  # a test question inside a document
        document = {"type": "language", "id": "copied", "segments": [{"text": f"Question: {question} Answer: 1."}]}
        f.write(json.dumps(document) + "\n")
    with pytest.raises(ValueError, match="question"):
        overlap.check_overlap(copy)


def test_a_suite_bigger_than_its_held_out_space_fails_before_building(tmp_path):
    # 300 text questions cycle through three families: 100 arithmetic ones (of 187 questions in
    # all, about 30% reserved for tests) and 100 comparisons (of 220)
    cfg = load(WorldConfig, TINY, {"eval_suite_counts": {"text_mcq": 300}})
    pattern = r"eval suite 'text_mcq': space 'question:(arithmetic|compare)' is too small .*\(\d+ of its (187|220) questions"
    with pytest.raises(ValueError, match=pattern):
        build.build(cfg, tmp_path / "world")
    assert not (tmp_path / "world").exists()
    with pytest.raises(ConfigError, match="eval_suite_counts: unknown suite"):
        load(WorldConfig, {"eval_suite_counts": {"text_mcqs": 3}})


def test_every_test_item_names_its_split(tiny_world):
    summary = json.loads((tiny_world / build.WORLD_FILE).read_text())
    for suite in tasks.EVAL_SUITES:
        truths = [json.loads(line) for line in (tiny_world / "eval" / f"{suite}.truth.jsonl").read_text().splitlines()]
        assert truths and all(t["split"] in tasks.SPLITS and t["unseen"] for t in truths), suite
        assert {t["split"] for t in truths} <= {tasks.SUITE_SPLITS[suite], "unseen_combination"}
        if suite == "image_generation":
            assert all(t["heldout"] == (t["split"] == "unseen_combination") for t in truths)
        assert sum(summary["heldout"]["splits"][suite].values()) == len(truths)
    asr = [json.loads(line) for line in (tiny_world / "eval" / "asr.truth.jsonl").read_text().splitlines()]
    assert all("voice" in t["unseen"] for t in asr)


def _lines(world: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (world / "eval" / f"{name}.jsonl").read_text().splitlines()]


def _user(line: dict) -> list[dict]:
    return line["messages"][0]["content"]


def test_control_arms_are_aligned_with_their_suites(tiny_world):
    summary = json.loads((tiny_world / build.WORLD_FILE).read_text())
    assert summary["arms"] == {"covt": {"direct": "eval/covt.direct.jsonl"},
                               "icl": {"question": "eval/icl.question.jsonl", "shuffled": "eval/icl.shuffled.jsonl"}}
    for suite, arms in summary["arms"].items():
        ids = [line["id"] for line in _lines(tiny_world, suite)]
        for arm, rel in arms.items():
            records = list(read_manifest(tiny_world / rel))  # the SFT manifest schema
            assert [r.where for r in records] and [line["id"] for line in _lines(tiny_world, f"{suite}.{arm}")] == ids


def test_covt_direct_differs_from_covt_only_by_the_drawing_instruction(tiny_world):
    truths = [json.loads(line) for line in (tiny_world / "eval" / "covt.truth.jsonl").read_text().splitlines()]
    for drawn, direct, truth in zip(_lines(tiny_world, "covt"), _lines(tiny_world, "covt.direct"), truths):
        (prompt, picture), (prompt_direct, picture_direct) = _user(drawn), _user(direct)
        assert picture == picture_direct and tasks.COVT_DRAW in prompt["text"]
        assert prompt_direct["text"] == prompt["text"].replace(tasks.COVT_DRAW, tasks.COVT_DIRECT)
        assert direct["messages"][1]["content"] == truth["answer"] == drawn["messages"][1]["content"][-1]["text"]
    # SFT teaches the format on items of its own: covt and covt_direct never share a source picture
    sft = {task: [json.loads(line) for line in (tiny_world / "sft" / f"{task}.jsonl").read_text().splitlines()]
           for task in ("covt", "covt_direct")}
    for line in sft["covt_direct"]:
        prompt, picture = _user(line)
        assert prompt["text"].startswith("Imagine this change: ") and tasks.COVT_DRAW not in prompt["text"]
        assert prompt["text"].endswith(tasks.COVT_DIRECT + " using a single word or phrase.")
        assert isinstance(line["messages"][1]["content"], str)
    sources = {task: {_user(line)[1]["image"] for line in lines} for task, lines in sft.items()}
    assert not sources["covt"] & sources["covt_direct"]
    ctx, _ = _context(False)
    drawn = {scene_key(s) for s in (ctx.edit(item_rng(3, i), 2, tasks._covt_half(ctx, True))[0] for i in range(50))}
    direct = {scene_key(s) for s in (ctx.edit(item_rng(3, i), 2, tasks._covt_half(ctx, False))[0] for i in range(50))}
    assert not drawn & direct


def test_edits_give_the_instruction_before_the_picture(tiny_world):
    for task in ("image_editing", "covt", "covt_direct"):
        lines = [json.loads(line) for line in (tiny_world / "sft" / f"{task}.jsonl").read_text().splitlines()]
        lines += _lines(tiny_world, task.replace("_direct", ".direct"))
        assert lines
        for line in lines:
            assert [next(iter(k for k in ("text", "image") if k in part)) for part in _user(line)] == ["text", "image"]


def _shots(line: dict) -> tuple[list[str], list[str]]:
    content = _user(line)
    return [p["image"] for p in content if "image" in p], [p["text"] for p in content if "text" in p]


def test_icl_arms_ask_in_words_and_shuffle_the_shots(tiny_world):
    truths = [json.loads(line) for line in (tiny_world / "eval" / "icl.truth.jsonl").read_text().splitlines()]
    arms = zip(_lines(tiny_world, "icl"), _lines(tiny_world, "icl.question"), _lines(tiny_world, "icl.shuffled"), truths)
    for k_shot, question, shuffled, truth in arms:
        images, answers = _shots(k_shot)
        assert answers == [ICL_ANSWER.format(answer=a) + "\n" for a in truth["shot_answers"]]
        # the question arm: the query picture and its question in image QA's format and reply
        assert _user(question) == [{"image": images[-1]}, {"text": instruction("image_qa", question=truth["question"])}]
        assert question["messages"][1]["content"] == truth["answer"]
        # the shuffled arm: the same pictures and query, the shots' answers permuted so they change
        shuffled_images, shuffled_answers = _shots(shuffled)
        assert shuffled_images == images and shuffled["messages"][1] == k_shot["messages"][1]
        assert sorted(shuffled_answers) == sorted(answers) and shuffled_answers != answers
        assert shuffled_answers == [ICL_ANSWER.format(answer=a) + "\n" for a in truth["shuffled_answers"]]


def test_shuffled_answers_change_every_shot_they_can():
    assert tasks.shuffle_answers(["red", "blue", "green"]) == ["blue", "green", "red"]
    rng = random.Random(7)
    for _ in range(300):
        answers = [rng.choice("abc") for _ in range(rng.randint(2, 6))]
        shuffled = tasks.shuffle_answers(answers)
        assert sorted(shuffled) == sorted(answers)
        most = max(answers.count(a) for a in answers)
        unchanged = sum(a == b for a, b in zip(answers, shuffled))
        assert unchanged == max(0, 2 * most - len(answers)), (answers, shuffled)  # the fewest possible


def test_image_qa_teaches_the_icl_questions():
    rng = random.Random(8)
    for _ in range(40):
        scene = SceneSampler(seed=rng.randrange(10**6), max_objects=1).sample()
        asked = dict(tasks.scene_qa(scene, random.Random(seed))[:2] for seed in range(200))
        for kind in tasks.ICL_KINDS:
            question = tasks.icl_question(scene, kind)
            assert asked[question] == tasks.icl_answer(scene, kind), (kind, question)


def test_the_assistant_speaks_with_one_voice_and_pretraining_with_many(tiny_world):
    summary = json.loads((tiny_world / build.WORLD_FILE).read_text())
    assistant = summary["voices"]["assistant"]
    assert assistant == split_voices(load(WorldConfig, TINY))[0][0].id
    voice_of = {}
    for line in (tiny_world / "media_index.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry["kind"] == "speech":
            voice_of[entry["path"]] = entry["voice"]

    def reply_voices(path: Path) -> set[str]:
        voices = set()
        for record in read_manifest(path):
            role, content = record.messages[-1]
            assert role == "assistant"
            voices |= {voice_of[os.path.relpath(p, tiny_world)] for part in content if not isinstance(part, str)
                       for p in part.paths}
        return voices

    for name in ("tts", "speech_generation", "speech_to_speech"):
        assert reply_voices(tiny_world / "sft" / f"{name}.jsonl") == {assistant}, name
        assert reply_voices(tiny_world / "eval" / f"{name}.jsonl") == {assistant}, name
    # What users say, and the pre-training speech, keep the other voices.
    pretrain = {voice_of[os.path.relpath(p, tiny_world)] for record in
                read_manifest(tiny_world / "pretrain" / "speech_text_pair.jsonl") for ref in record.media() for p in ref.paths}
    asr = {voice_of[os.path.relpath(p, tiny_world)] for record in read_manifest(tiny_world / "eval" / "asr.jsonl")
           for ref in record.media() for p in ref.paths}
    assert assistant not in asr and (len(pretrain) > 1 or pretrain != {assistant})
    with pytest.raises(ConfigError, match="assistant_voice"):
        load(WorldConfig, TINY, {"assistant_voice": 99})


def test_language_sft_names_the_answer_of_some_mcqs_to_teach_the_letter_binding():
    ctx, _ = _context(False)
    named = 0
    for i in range(200):
        item = tasks.language_only(ctx, item_rng(3, i))
        question = item.messages[0].content if hasattr(item.messages[0], "content") else None
        layout = item.truth.get("layout", "")
        if layout.startswith("Which option is "):
            named += 1
            option = layout.split("Which option is ", 1)[1].split("?", 1)[0]
            assert f"{item.truth['answer']}. {option}\n" in layout + "\n", (layout, question)
    assert 10 < named < 60
