"""`mio demo --preset smoke`: the whole recipe runs, writes the report, and resumes after a
failure from the first unfinished step."""

import json
import re
from pathlib import Path

import pytest

from mio import config as config_lib
from mio.cli.main import main
from mio.config import ConfigError
from mio.demo import pipeline as demo_lib
from mio.train.loop import load_config
from mio.train.text_tokenizer import TextTokenizerConfig

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["world", "media_tokenizers", "text_tokenizer", "prepare",
         "stage1", "stage2", "stage3", "sft", "eval_base", "eval_instruct", "diagnosis", "report"]


def test_smoke_demo_runs_end_to_end_and_resumes_after_a_failure(tmp_path, monkeypatch):
    out = tmp_path / "demo"
    cfg = demo_lib.load_demo_config(demo_lib.preset_path("smoke"))
    original = demo_lib.Demo.step_stage
    calls = {"world": 0}

    def failing_stage(self, index):
        if self.stage_names[index] == "stage2":
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C during Stage II
        return original(self, index)

    monkeypatch.setattr(demo_lib.Demo, "step_stage", failing_stage)
    with pytest.raises(KeyboardInterrupt):
        demo_lib.run_demo(cfg, out, "smoke")
    state = json.loads((out / demo_lib.STATE_FILE).read_text())
    assert list(state["steps"]) == STEPS[:5]

    # Run again: finished steps are skipped (the world is not rebuilt), the rest complete.
    monkeypatch.setattr(demo_lib.Demo, "step_stage", original)
    original_world = demo_lib.Demo.step_world

    def counting_world(self):
        calls["world"] += 1
        return original_world(self)

    monkeypatch.setattr(demo_lib.Demo, "step_world", counting_world)
    assert main(["demo", "--preset", "smoke", "--out", str(out)]) == 0
    assert calls["world"] == 0
    state = json.loads((out / demo_lib.STATE_FILE).read_text())
    assert list(state["steps"]) == STEPS
    assert state["steps"]["stage1"]["seconds"] > 0

    # The stages ran the paper's recipe: Stage II/III/SFT started from the previous stage,
    # and Stage III read the speech pairs prepared with the Stage III ASR template.
    runs = {s: json.loads((out / "runs" / s / "run.json").read_text()) for s in ("stage1", "stage2", "stage3", "sft")}
    assert runs["stage2"]["config"]["init_from"].endswith("runs/stage1")
    assert runs["sft"]["config"]["init_from"].endswith("runs/stage3")
    assert runs["stage3"]["config"]["data"]["sources"]["speech_text_pair"].endswith("shards/stage3/speech_text_pair")
    assert set(runs["stage1"]["data_shares"]) == {"image_text_pair", "language", "speech_text_pair"}
    # The text tokenizer read all pre-training text and a fixed sample of each SFT task.
    text_cfg = config_lib.load(TextTokenizerConfig, out / "configs" / "text_tokenizer.toml")
    assert text_cfg.manifests and all("/pretrain/" in m for m in text_cfg.manifests)
    assert {Path(m).stem for m in text_cfg.sampled_manifests} >= {"image_generation", "tts"}

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["preset"] == "smoke"
    assert set(metrics["checkpoints"]) == {"base", "instruct"}
    # Each checkpoint's entry is its `mio eval --json` result (DESIGN's contract).
    instruct, base = metrics["checkpoints"]["instruct"], metrics["checkpoints"]["base"]
    assert len(instruct["suites"]) + len(instruct["skipped"]) == 18
    assert "text_mcq" in base["suites"] and base["model"] and instruct["model"]
    assert all(scores["n"] >= 1 for scores in instruct["suites"].values())
    assert set(metrics["steps"]) >= set(STEPS[:-1])
    assert {t["suite"] for t in metrics["targets"]} >= {"image_captioning", "asr", "tts", "icl", "covt"}
    # Nested tokenizer metrics come through under dotted keys, without the training config.
    speech = metrics["tokenizers"]["speech"]
    assert "heldout.layer1_ctc_cer" in speech and "train.seconds" in speech
    assert not any(key.startswith("config.") for key in speech)
    assert "judge_exact" in metrics["tokenizers"]["image"]

    # The diagnosis scored both checkpoints' media codes and the tokenizers' consistency.
    diagnosis = json.loads((out / "diagnosis.json").read_text())
    assert set(diagnosis["checkpoints"]) == {"base", "instruct"} == set(state["steps"]["diagnosis"]) - {"seconds"}
    layout = runs["sft"]["config"]["layout"]
    for losses in diagnosis["checkpoints"].values():
        assert len(losses["image_code_loss"]["heldout"]) == layout["tokens_per_image"]
        assert len(losses["speech_code_loss"]["train"]) == layout["speech_layers"]
    assert {"image", "speech"} <= set(diagnosis["consistency"])
    assert metrics["diagnosis"]["checkpoints"] == diagnosis["checkpoints"]

    page = (out / "report.html").read_text()
    for heading in ("Quality targets", "Evaluation", "Training loss", "Diagnosis: why generation is hard",
                    "Gallery: instruct"):
        assert heading in page
    assert "judge reads:" in page  # beside the generated pictures
    assert "heldout.layer1_ctc_cer" in page and "codebook_usage.layer1" not in page
    assert "<svg" in page and "<polyline" in page
    assert "Whisper heard:" in page  # beside the audio players of spoken replies
    # Every media file the page links to exists, relative to the page.
    links = re.findall(r'src="([^"]+)"', page)
    assert any(link.endswith(".png") for link in links)
    for link in links:
        assert (out / link).is_file(), link

    # Finished: a third run does nothing but say so.
    assert main(["demo", "--preset", "smoke", "--out", str(out)]) == 0


def test_every_preset_and_toy_stage_config_parses():
    for preset in demo_lib.PRESETS:
        cfg = demo_lib.load_demo_config(demo_lib.preset_path(preset))
        for stage in cfg.stages:
            assert Path(stage).is_file()
            load_config(stage, cfg.stage_overrides)
        for path in (cfg.world, cfg.image_tokenizer, cfg.speech_tokenizer):
            assert Path(path).is_file(), path


def test_long_preset_is_the_default_with_three_times_the_steps():
    default = demo_lib.load_demo_config(demo_lib.preset_path("default"))
    long = demo_lib.load_demo_config(demo_lib.preset_path("long"))
    for name in ("world", "image_tokenizer", "speech_tokenizer", "stages", "text_vocab_size", "eval_limit",
                 "eval_suite_limits"):
        assert getattr(long, name) == getattr(default, name), name
    for stage, steps in default.stage_steps.items():
        assert long.stage_steps[stage] == 3 * steps, stage
    context = {k: v for k, v in default.stage_overrides.items() if k != "save_every"}
    assert {k: long.stage_overrides[k] for k in context} == context


def test_demo_refuses_another_presets_directory_and_bad_configs(tmp_path):
    (tmp_path / demo_lib.STATE_FILE).write_text(json.dumps({"preset": "default", "steps": {"world": {"seconds": 1}}}))
    with pytest.raises(ValueError, match="preset 'default'"):
        demo_lib.DemoState(tmp_path, "smoke")
    bad = tmp_path / "bad.toml"
    bad.write_text('world = "w.toml"\nimage_tokenizer = "i.toml"\nspeech_tokenizer = "s.toml"\nstages = []\nunknown_key = 1\n')
    with pytest.raises(ConfigError, match="unknown_key"):
        demo_lib.load_demo_config(bad)
    with pytest.raises(ValueError, match="unknown preset"):
        demo_lib.preset_path("huge")
    typo = tmp_path / "typo.toml"
    typo.write_text('world = "w.toml"\nimage_tokenizer = "i.toml"\nspeech_tokenizer = "s.toml"\nstages = ["a.toml"]\n'
                    'eval_suite_limits = { ttss = 4 }\n')
    with pytest.raises(ConfigError, match="unknown suite 'ttss'"):
        demo_lib.load_demo_config(typo)


def test_media_tokenizers_can_train_one_after_the_other(tmp_path, monkeypatch):
    from mio.train import image_tokenizer as image_train
    from mio.train import speech_tokenizer as speech_train

    order = []
    monkeypatch.setattr(image_train, "train_from_config", lambda cfg, out: order.append(("image", out)) or {"psnr": 1.0})
    monkeypatch.setattr(speech_train, "train_from_config", lambda cfg, out: order.append(("speech", out)) or {})
    cfg = demo_lib.load_demo_config(demo_lib.preset_path("smoke"))
    cfg.parallel_tokenizers = False
    info = demo_lib.Demo(cfg, tmp_path, "smoke").step_media_tokenizers()
    assert order == [("image", tmp_path / "tokenizers" / "image"), ("speech", tmp_path / "tokenizers" / "speech")]
    assert info == {"image": {"psnr": 1.0}, "speech": {}}


def test_time_left_rescales_the_estimates_by_the_finished_steps(tmp_path):
    state = demo_lib.DemoState(tmp_path, "x")
    estimates = {"a": 10.0, "b": 20.0}
    assert demo_lib.time_left(["a", "b"], state, estimates) == 30.0
    state.finish("a", 20.0)  # twice as slow as estimated
    assert demo_lib.time_left(["a", "b"], state, estimates) == 40.0
    assert demo_lib.time_left(["a", "b"], state, {}) is None
