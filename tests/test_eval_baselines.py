"""Every blind baseline stays at chance on every suite's headline metric, so a metric that a
reply made without looking at the item can game fails here."""

import json
from collections import Counter
from pathlib import Path

import pytest

from mio.config import load
from mio.eval import baselines
from mio.eval.harness import evaluate
from mio.eval.suites import HEADLINE, SUITES, run_suite
from mio.judges import speech as speech_judge
from mio.toyworld import build
from mio.toyworld.world import WorldConfig

TINY = Path(__file__).resolve().parents[1] / "configs" / "toyworld" / "tiny.toml"
ITEMS = 12
"""Test items per suite: enough that a lucky constant cannot pass for skill."""
SPEAKING = ("tts", "speech_generation", "speech_to_speech")
# Chance on each suite's headline metric. "best_constant": the share of the most common true
# answer (no constant reply can beat it). Epsilons cover a lucky draw on ITEMS items.
CHANCE = {
    "text_mcq": ("<=", "best_constant", 0.0),
    "image_captioning": ("<=", 0.0, 0.10),
    "image_qa": ("<=", "best_constant", 0.0),
    "image_generation": ("<=", 0.0, 0.10),
    "image_editing": ("<=", 0.0, 0.10),
    "asr": (">=", 0.8, 0.0),
    "tts": (">=", 0.8, 0.0),
    "speech_understanding": ("<=", "best_constant", 0.0),
    "speech_generation": ("<=", "best_constant", 0.0),
    "speech_to_speech": ("<=", "best_constant", 0.0),
    "video_captioning": ("<=", 0.0, 0.10),
    "video_understanding": ("<=", "best_constant", 0.0),
    "video_generation": ("<=", 0.0, 0.20),
    "storytelling": ("<=", 0.0, 0.10),
    "covt": ("abs<=", 0.0, 0.10),
    "icl": ("abs<=", 0.0, 0.10),
    "mcot": ("<=", "best_constant", 0.0),
    "chart": ("<=", "best_constant", 0.0),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    build.build(load(WorldConfig, TINY, {"eval_per_suite": ITEMS}), out)
    return out


def best_constant(world: Path, suite: str) -> float:
    truths = [json.loads(line) for line in (world / "eval" / f"{suite}.truth.jsonl").read_text().splitlines() if line]
    answers = Counter(str(t["answer"]).lower() for t in truths[:ITEMS])
    return answers.most_common(1)[0][1] / sum(answers.values())


def test_every_suite_has_baselines_and_a_chance_level():
    assert set(baselines.SUITE_BASELINES) == set(SUITES) == set(CHANCE) == set(HEADLINE)


@pytest.mark.parametrize("suite", list(SUITES))
def test_blind_baselines_score_at_chance(suite, world):
    if suite in SPEAKING and not speech_judge.available():
        pytest.skip(speech_judge.UNAVAILABLE_HINT)
    op, level, epsilon = CHANCE[suite]
    level = best_constant(world, suite) if level == "best_constant" else level
    metric = HEADLINE[suite]
    scores = baselines.baseline_scores(suite, world, ITEMS, 64, base=False)
    assert set(scores) == set(baselines.SUITE_BASELINES[suite])
    for name, result in scores.items():
        value = result[metric]
        if op == "<=":
            assert value <= level + epsilon, f"{suite}: blind baseline {name} scores {metric} {value:.3f} > chance {level:.3f}"
        elif op == ">=":
            assert value >= level - epsilon, f"{suite}: blind baseline {name} scores {metric} {value:.3f} < chance {level:.3f}"
        else:
            assert abs(value - level) <= epsilon, f"{suite}: blind baseline {name} scores {metric} {value:.3f}"


def test_the_gaming_caption_is_caught(world):
    """One fixed caption naming every attribute value, the reply that beat the model on the old metric."""
    scores = baselines.baseline_scores("image_captioning", world, ITEMS, 64, base=False)
    assert scores["name_everything"]["f1"] <= 0.1 and scores["name_everything"]["exact"] == 0.0


def test_harness_reports_baselines_and_intervals(world, monkeypatch):
    """`evaluate` puts every suite's baselines and 95% intervals beside the model's scores."""
    runner_model = baselines.BlindRunner("constant", world)  # a stand-in model: never called below

    def fake_run_suite(name, runner, world_dir, limit=None, image_size=64):
        return run_suite(name, baselines.BlindRunner("prompt_copy", world_dir), world_dir, limit, image_size)

    monkeypatch.setattr("mio.eval.harness.run_suite", fake_run_suite)
    result, _ = evaluate(runner_model, "stand-in", world, ["text_mcq", "image_captioning"], limit=ITEMS)
    for name in ("text_mcq", "image_captioning"):
        scores = result["suites"][name]
        metric = HEADLINE[name]
        low, high = scores["ci95"][metric]
        assert 0.0 <= low <= scores[metric] <= high <= 1.0
        assert set(scores["baselines"]) == set(baselines.SUITE_BASELINES[name])
