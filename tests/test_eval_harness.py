"""The evaluation harness: every suite scored on a tiny world, by an oracle that replies
with the reference answers (the scorers must give full marks) and by a random-weight model
through the real API (plumbing, reproducibility, the `mio eval` command)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import SMALL_LAYOUT, TINY_WORLD, make_run_dir
from mio.cli.main import main
from mio.config import load
from mio.eval import harness, suites
from mio.eval.baselines import SUITE_BASELINES
from mio.eval.suites import SUITES, Runner, SuiteSkipped, load_items, run_suite
from mio.judges import speech as speech_judge
from mio.segments import Image, Text
from mio.toyworld.world import WorldConfig

pytestmark = pytest.mark.usefixtures("one_thread")

SPEAKING = ("tts", "speech_generation", "speech_to_speech")


@pytest.fixture(scope="module")
def world(tiny_world) -> Path:
    return tiny_world


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, text_tokenizer) -> Path:
    """An untrained run directory laid out like `mio train`'s export (stage: sft)."""
    return make_run_dir(tmp_path_factory.mktemp("run"), text_tokenizer, positions=2048, context_length=2048, stage="sft")


@pytest.fixture(scope="module")
def model(run_dir):
    from mio.api import MIO

    return MIO.from_pretrained(run_dir, device="cpu")


@pytest.fixture
def fake_whisper(monkeypatch):
    """A stand-in transcriber (the real judge is slow; it is exercised in one test below)."""
    monkeypatch.setattr(speech_judge, "available", lambda: True)
    monkeypatch.setattr(speech_judge, "transcribe", lambda waves, rate: ["the answer is 3"] * len(waves))


# Runners that never call the model need only its vocabulary layout.
STAND_IN_MODEL = SimpleNamespace(vocab=SimpleNamespace(layout=SMALL_LAYOUT))


class OracleRunner(Runner):
    """Replies with each item's reference reply, restricted to the requested modalities."""

    def _reply(self, item, output_modalities):
        kinds = {"Text": "text", "Image": "image", "Video": "video", "Speech": "speech"}
        return [s for s in item.reference if output_modalities is None or kinds[type(s).__name__] in output_modalities]

    def chat(self, suite, items, prompts=None, output_modalities=None, max_new_tokens=0):
        replies = [self._reply(i, output_modalities) for i in items]
        self._keep(suite, items, replies)
        return replies

    def complete(self, suite, items, prompts, output_modalities=None, max_new_tokens=0):
        return self.chat(suite, items, output_modalities=output_modalities)


ORACLE_SCORES = {
    "text_mcq": {"accuracy": 1.0},
    "image_captioning": {"f1": 1.0, "exact": 1.0},
    "image_qa": {"vqa_accuracy": 1.0},
    "image_generation": {"judge_exact": 1.0, "object_f1": 1.0, "ssim": 1.0},
    "image_editing": {"judge_exact": 1.0, "ssim": 1.0, "copied_source": 0.0},
    "asr": {"wer": 0.0},
    "speech_understanding": {"vqa_accuracy": 1.0},
    "video_captioning": {"change_f1": 1.0, "change_exact": 1.0},
    "video_understanding": {"vqa_accuracy": 1.0},
    "video_generation": {"change_accuracy": 1.0, "first_exact": 1.0, "last_exact": 1.0},
    "storytelling": {"image_exact": 1.0, "story_exact": 1.0, "first_exact": 1.0, "next_given_previous": 1.0,
                     "consistency": 1.0},
    "covt": {"accuracy_with_image": 1.0, "accuracy_direct": 1.0, "image_exact": 1.0},
    "icl": {"accuracy_k_shot": 1.0},
    "mcot": {"vqa_accuracy": 1.0, "answered": 1.0},
    "chart": {"vqa_accuracy": 1.0},
}


def test_reference_answers_get_full_marks(world, fake_whisper):
    runner = OracleRunner(STAND_IN_MODEL)
    assert set(ORACLE_SCORES) | set(SPEAKING) == set(SUITES)
    for name, expected in ORACLE_SCORES.items():
        scores = run_suite(name, runner, world)
        assert scores["n"] == load(WorldConfig, TINY_WORLD).eval_per_suite
        for metric, value in expected.items():
            assert scores[metric] == pytest.approx(value, abs=1e-6), (name, metric, scores)
    for name in SPEAKING:  # the stand-in judge hears the same for reference and reply
        scores = run_suite(name, runner, world)
        assert scores["wer"] == scores["judge_wer_reference"] and scores["has_speech"] == 1.0
        assert all(record["heard"] == "the answer is 3" for record in runner.replies[name])


class FirstPictureRunner(OracleRunner):
    """Draws every picture of a story as its first one: the caption found, no change made."""

    def _reply(self, item, output_modalities):
        pictures = [s for s in item.reference if isinstance(s, Image)]
        return [x for k in range(len(pictures)) for x in (Text(f" {k + 1}."), pictures[0])]


def test_storytelling_tells_finding_the_caption_from_making_the_change(world):
    scores = run_suite("storytelling", FirstPictureRunner(STAND_IN_MODEL), world)
    steps = load(WorldConfig, TINY_WORLD).story_steps
    assert scores["first_exact"] == 1.0 and scores["next_given_previous"] == 0.0
    assert scores["image_exact"] == pytest.approx(1 / steps) and scores["story_exact"] == 0.0


class OneKindRunner(OracleRunner):
    """Answers right only the questions of one kind (the first item's), as a model that has
    learned to count and nothing else."""

    def chat(self, suite, items, prompts=None, output_modalities=None, max_new_tokens=0):
        kind = items[0].truth["kind"]
        return [[Text(i.truth["answer"] if i.truth["kind"] == kind else "nothing")] for i in items]


@pytest.mark.parametrize("suite", ["image_qa", "video_understanding"])
def test_short_answers_are_scored_per_kind_of_question(world, suite):
    items = load_items(world, suite)
    scores = run_suite(suite, OneKindRunner(STAND_IN_MODEL), world)
    kind = items[0].truth["kind"]
    by_kind = scores["by_kind"]
    assert set(by_kind) == {i.truth["kind"] for i in items} and sum(v["n"] for v in by_kind.values()) == len(items)
    assert {k: v["vqa_accuracy"] for k, v in by_kind.items()} == {k: float(k == kind) for k in by_kind}
    assert scores["vqa_accuracy"] == pytest.approx(by_kind[kind]["n"] / len(items))
    assert f"{kind} (vqa_accuracy 1.000, n {by_kind[kind]['n']})" in harness.format_value(by_kind)


class ConstantLetterRunner(OracleRunner):
    """Answers every question with the letter D, as an untrained model often does."""

    def _reply(self, item, output_modalities):
        return [Text("The answer is D")]


def test_mcq_reports_a_constant_answer(world):
    truth = [json.loads(line)["answer"] for line in (world / "eval" / "text_mcq.truth.jsonl").read_text().splitlines()]
    scores = run_suite("text_mcq", ConstantLetterRunner(STAND_IN_MODEL), world)
    assert scores["top_letter_share"] == 1.0
    assert scores["accuracy"] == pytest.approx(truth.count("D") / len(truth))
    oracle = run_suite("text_mcq", OracleRunner(STAND_IN_MODEL), world)
    assert oracle["top_letter_share"] == pytest.approx(max(truth.count(x) for x in "ABCD") / len(truth))


@pytest.mark.skipif(not speech_judge.available(), reason=speech_judge.UNAVAILABLE_HINT)
def test_whisper_judges_reference_speech(world):
    runner = OracleRunner(STAND_IN_MODEL)
    scores = run_suite("tts", runner, world, limit=2)
    assert scores["wer"] == scores["judge_wer_reference"] < 0.5  # the oracle's audio is the reference


def test_speaking_suites_are_skipped_without_the_judge(world, model, monkeypatch):
    monkeypatch.setattr(speech_judge, "available", lambda: False)
    result, _ = harness.evaluate(model, "run", world, list(SPEAKING), limit=1)
    assert result["suites"] == {} and set(result["skipped"]) == set(SPEAKING)
    assert all("pip install" in reason for reason in result["skipped"].values())


def test_random_model_runs_every_suite_reproducibly(world, model, fake_whisper):
    result, runner = harness.evaluate(model, "run", world, limit=1, batch_size=2, seed=3)
    assert set(result["suites"]) == set(SUITES) and not result["skipped"]
    for name, scores in result["suites"].items():
        values = {k: v for k, v in scores.items() if k not in ("ci95", "baselines", "by_kind")}
        assert scores["n"] == 1 and all(isinstance(v, (int, float)) for v in values.values()), name
        for kind in scores.get("by_kind", {}).values():  # short answers, where the world names kinds
            assert set(kind) == {"vqa_accuracy", "n"} and kind["n"] >= 1, name
        assert scores["ci95"] and all(low <= high for low, high in scores["ci95"].values()), name
        assert set(scores["baselines"]) == set(SUITE_BASELINES[name]), name
    again, runner_again = harness.evaluate(
        model, "run", world, ["image_generation", "video_captioning"], limit=1, batch_size=2, seed=3
    )
    for name in again["suites"]:
        assert again["suites"][name] == result["suites"][name]
        assert [r["text"] for r in runner_again.replies[name]] == [r["text"] for r in runner.replies[name]]


def test_base_checkpoints_use_pretraining_templates(world, model, run_dir, tmp_path, fake_whisper):
    base_dir = tmp_path / "base"
    base_dir.mkdir()
    (base_dir / "run.json").write_text(json.dumps({"stage": "stage3"}))
    assert harness.is_base(base_dir) and not harness.is_base(run_dir) and not harness.is_base(tmp_path)
    result, runner = harness.evaluate(model, "run", world, ["image_captioning", "image_qa", "icl", "tts"], limit=1, base=True)
    assert set(result["suites"]) == {"image_captioning", "icl", "tts"}
    assert "instruction-tuned" in result["skipped"]["image_qa"]
    with pytest.raises(SuiteSkipped):
        suites.image_editing(Runner(model, base=True), [])


def test_eval_command_writes_metrics_json_and_table(world, run_dir, tmp_path):
    out, json_path = tmp_path / "eval", tmp_path / "m.json"
    code = main(["eval", "--model", str(run_dir), "--world", str(world), "--suite", "image_qa", "image_generation",
                 "--limit", "2", "--json", str(json_path), "--out", str(out), "--samples", "1", "--greedy"])
    assert code == 0
    result = json.loads(json_path.read_text())
    assert result["model"] == str(run_dir) and set(result["suites"]) == {"image_qa", "image_generation"}
    assert result["suites"]["image_qa"]["n"] == 2 and "vqa_accuracy" in result["suites"]["image_qa"]
    assert json.loads((out / "metrics.json").read_text()) == result
    assert "| image_generation | 2 |" in (out / "metrics.md").read_text()
    assert len((out / "replies" / "image_qa.jsonl").read_text().splitlines()) == 2
    assert list((out / "replies" / "image_generation").glob("*.png"))


def test_suite_limits_override_the_common_limit(world, model):
    result, _ = harness.evaluate(model, "run", world, ["text_mcq", "image_qa"], limit=1, suite_limits={"image_qa": 3})
    assert result["suites"]["text_mcq"]["n"] == 1 and result["suites"]["image_qa"]["n"] == 3


def test_unknown_suite_and_missing_world_are_clear_errors(model, tmp_path):
    with pytest.raises(ValueError, match="unknown suite"):
        harness.evaluate(model, "run", tmp_path, ["nope"])
    with pytest.raises(ValueError, match="unknown suite 'nope'"):
        harness.evaluate(model, "run", tmp_path, ["image_qa"], suite_limits={"nope": 2})
    with pytest.raises(FileNotFoundError, match="mio toyworld"):
        harness.evaluate(model, "run", tmp_path, ["image_qa"])


def test_spoken_reply_budget_follows_the_longest_reference(world, model):
    for suite in SPEAKING:
        items = suites.load_items(world, suite)
        longest = max(len(s.wave) / s.sample_rate for i in items for s in i.reference)
        assert suites.reply_seconds(items) == pytest.approx(min(suites.MAX_SPEECH_SECONDS, 1.5 * longest))
    # Without a reference for every item, the fixed maximum.
    items = suites.load_items(world, "tts")
    items[0] = dataclasses.replace(items[0], reference=[])
    assert suites.reply_seconds(items) == suites.MAX_SPEECH_SECONDS
    runner = Runner(model)
    frames = model.speech_tokenizer.frame_rate
    assert runner.speech_tokens(2.0) == 2 * int(frames) * model.vocab.layout.speech_layers + suites.BLOCK_OVERHEAD
