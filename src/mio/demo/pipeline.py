"""`mio demo`: the paper's recipe end to end on the embedded world, from nothing to a report.

    mio demo                    # default preset, ~30 minutes on a 2-core CPU
    mio demo --preset smoke     # the whole pipeline at tiny size, a few minutes
    mio demo --preset long      # the default with 3x the language model's steps
    mio demo --preset gpu       # a larger model for one GPU

Steps, in order (each one's output lives under `--out`, default `runs/demo`):

    world            build the toyworld corpus                    world/
    media_tokenizers train the embedded SEED-style image tokenizer  tokenizers/image/
                     and SpeechTokenizer-style codec, at once     tokenizers/speech/
    text_tokenizer   byte-level BPE on the corpus + media tokens  tokenizers/text/
    prepare          tokenize every sample once into shards       shards/main/, shards/stage3/
    stage1..stage3   pre-training (Table 9 ratios)                runs/stage1..3/
    sft              instruction tuning, assistant-only loss      runs/sft/
    eval_base        every suite on the Stage III checkpoint      eval/base/
    eval_instruct    every suite on the SFT checkpoint            eval/instruct/
    diagnosis        why generation is hard: code losses of both  diagnosis.json
                     checkpoints, tokenizer consistency
    report           report.html and metrics.json                 report.html, metrics.json

The exact config of each step that has one is written to `configs/` (`text_tokenizer.toml`,
`prepare_main.toml`, `prepare_stage3.toml`, one `<stage>.toml` per stage), so any step can be
rerun by hand: `mio tokenizer train text`, `mio prepare`, `mio train` take these files.

The stage configs are ordinary `mio train` TOMLs (`configs/toy/`), the same format as the
paper-scale preset (`configs/paper/`); their relative paths are relative to the demo
directory. A preset (`configs/demo/<name>.toml`, a `DemoConfig`) names the world and
tokenizer configs and overrides stage settings (steps, model size) for its scale.

Progress: each step logs its start, its time, and the estimated time left (the preset's
per-step estimates, rescaled by how fast the finished steps actually ran). Resuming: the
finished steps are recorded in `demo_state.json` (written atomically), so running the same
command again after an interruption continues with the first unfinished step; training
steps also continue from their last checkpoint.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mio import config as config_lib
from mio.logs import configure_logging
from mio.train.checkpoint import RUN_FILE
from mio.vocab import VocabLayout

log = logging.getLogger(__name__)

CONFIG_ROOT = Path(__file__).resolve().parent.parent / "configs"
PRESETS = ("smoke", "default", "long", "gpu")
STATE_FILE = "demo_state.json"
STAGE3_ASR_TEMPLATE = "asr_stage3"


@dataclass
class DemoConfig:
    """A demo preset. Relative config paths are relative to this file's directory."""

    world: str
    """Toyworld config (a `WorldConfig` TOML)."""
    image_tokenizer: str
    """Image tokenizer training config (an `ImageTrainConfig` TOML)."""
    speech_tokenizer: str
    """Speech tokenizer training config (a `SpeechTrainConfig` TOML)."""
    stages: list[str]
    """Stage configs (`TrainConfig` TOMLs) in order: Stage I, II, III, SFT."""
    text_vocab_size: int = 2048
    """Size of the byte-level BPE trained on the corpus, before media tokens."""
    text_tokenizer_sft_records: int = 120
    """The BPE reads all pre-training text and the first this many conversations of each SFT
    task: they hold every phrase of their task (SFT and test text take as many tokens as
    with all conversations read; docs/LOG.md, 2026-12-07, fourth session), and a change of an
    SFT task's count then leaves the tokenizer, so the token ids and every pre-training
    stage, as they were."""
    stage_overrides: dict[str, Any] = field(default_factory=dict)
    """Dotted keys set in every stage config (e.g. `"model.hidden_size" = 256`)."""
    stage_steps: dict[str, int] = field(default_factory=dict)
    """Optimizer steps per stage name (overrides the stage config)."""
    eval_limit: int = 40
    """Test items per suite."""
    eval_suite_limits: dict[str, int] = field(default_factory=dict)
    """Test items of named suites instead of `eval_limit` (e.g. fewer for the costly ones)."""
    eval_batch_size: int = 16
    """Prompts per generation batch during evaluation."""
    eval_greedy: bool = False
    """Greedy decoding for every modality instead of the paper's Table 11 settings."""
    eval_samples: int = 4
    """Replies per suite whose media are saved and shown in the report."""
    diagnosis_items: int = 64
    """Training items and test items (each) whose media codes the diagnosis step scores."""
    threads: int = 0
    """torch CPU threads (0: torch's default)."""
    parallel_tokenizers: bool = True
    """Train the image and speech tokenizers at once, in two processes that split the CPU
    threads. They are independent, and small models use two threads poorly, so on 2 cores
    this is faster than one after the other with both threads each (docs/LOG.md, 2026-12-02)."""
    device: str = "auto"
    """Device for training and evaluation: auto, cpu, cuda, ..."""
    estimated_seconds: dict[str, float] = field(default_factory=dict)
    """Expected seconds per step on the reference machine, for the time-left estimate."""

    def validate(self) -> None:
        if len(self.stages) < 1:
            raise ValueError("stages: name at least one stage config")
        if self.eval_limit < 1 or self.eval_batch_size < 1 or any(n < 1 for n in self.eval_suite_limits.values()):
            raise ValueError("eval_limit, eval_suite_limits and eval_batch_size must be >= 1")
        if self.diagnosis_items < 1:
            raise ValueError("diagnosis_items must be >= 1")
        if self.text_tokenizer_sft_records < 1:
            raise ValueError("text_tokenizer_sft_records must be >= 1")
        from mio.eval.suites import check_suite_names

        check_suite_names(self.eval_suite_limits)  # here, not after half an hour of training


def preset_path(preset: str) -> Path:
    """The TOML file of a named preset."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    return CONFIG_ROOT / "demo" / f"{preset}.toml"


def load_demo_config(path: str | Path) -> DemoConfig:
    """Read a preset and make its config paths absolute (relative to the preset file)."""
    path = Path(path)
    cfg = config_lib.load(DemoConfig, path)
    here = path.resolve().parent
    cfg.world = str(here / cfg.world)
    cfg.image_tokenizer = str(here / cfg.image_tokenizer)
    cfg.speech_tokenizer = str(here / cfg.speech_tokenizer)
    cfg.stages = [str(here / s) for s in cfg.stages]
    return cfg


# ---------------------------------------------------------------- state and progress


class DemoState:
    """Which steps have finished and how long each took; saved after every step."""

    def __init__(self, out: Path, preset: str):
        self.path = out / STATE_FILE
        self.data = {"preset": preset, "steps": {}}
        if self.path.is_file():
            saved = json.loads(self.path.read_text())
            if saved.get("preset") != preset:
                raise ValueError(
                    f"{out} holds a demo of preset {saved.get('preset')!r}, not {preset!r}; "
                    "use another --out or pass --restart"
                )
            self.data = saved

    def done(self, step: str) -> bool:
        return step in self.data["steps"]

    def seconds(self, step: str) -> float:
        return self.data["steps"][step]["seconds"]

    def finish(self, step: str, seconds: float, info: dict | None = None) -> None:
        self.data["steps"][step] = {"seconds": round(seconds, 2), **(info or {})}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)


def time_left(steps: list[str], state: DemoState, estimates: dict[str, float]) -> float | None:
    """Estimated seconds for the unfinished steps: the preset's estimates scaled by how the
    finished steps compared with theirs (None without estimates)."""
    if not estimates:
        return None
    finished = [s for s in steps if state.done(s) and estimates.get(s)]
    speed = sum(state.seconds(s) for s in finished) / sum(estimates[s] for s in finished) if finished else 1.0
    return speed * sum(estimates.get(s, 0.0) for s in steps if not state.done(s))


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


# ---------------------------------------------------------------- the steps


class Demo:
    """The demo's steps over one output directory."""

    def __init__(self, cfg: DemoConfig, out: Path, preset: str):
        self.cfg, self.out, self.preset = cfg, out, preset
        self.world = out / "world"
        self.tokenizers = out / "tokenizers"
        self.shards = out / "shards"
        self.configs = out / "configs"  # the exact config of each step, to rerun it by hand
        self.stage_names = [self._stage_config(p).name for p in cfg.stages]

    # -- helpers --

    def layout(self) -> VocabLayout:
        """The vocabulary layout the trained media tokenizers imply."""
        from mio.tokenizers.base import load_tokenizer

        image = load_tokenizer(self.tokenizers / "image")
        speech = load_tokenizer(self.tokenizers / "speech")
        return VocabLayout(image_codebook_size=image.codebook_size, tokens_per_image=image.tokens_per_image,
                           speech_codebook_size=speech.codebook_size, speech_layers=4)

    def _stage_config(self, path: str, layout: VocabLayout | None = None):
        """A stage config with the preset's overrides, paths moved under the demo directory."""
        from mio.train.loop import load_config

        overrides = dict(self.cfg.stage_overrides)
        if layout is not None:
            overrides.update({f"layout.{k}": v for k, v in config_lib.to_dict(layout).items()})
        overrides["device"] = self.cfg.device
        cfg = load_config(path, overrides)
        if cfg.name in self.cfg.stage_steps:
            cfg.steps = self.cfg.stage_steps[cfg.name]
        under = lambda p: str(self.out / p) if p and not Path(p).is_absolute() else p  # noqa: E731
        for key in ("out_dir", "text_tokenizer", "init_from", "image_tokenizer", "speech_tokenizer"):
            setattr(cfg, key, under(getattr(cfg, key)))
        cfg.data.sources = {k: under(v) for k, v in cfg.data.sources.items()}
        cfg.validation = {k: under(v) for k, v in cfg.validation.items()}
        return cfg

    def run_dir(self, stage: str) -> Path:
        index = self.stage_names.index(stage)
        return Path(self._stage_config(self.cfg.stages[index]).out_dir)

    def base_stage(self) -> str:
        """The stage whose checkpoint is evaluated as the base model: the one before SFT."""
        return self.stage_names[-2] if len(self.stage_names) > 1 else self.stage_names[-1]

    # -- steps --

    def step_world(self) -> dict:
        from mio.toyworld.build import build
        from mio.toyworld.world import WorldConfig

        world_cfg = config_lib.load(WorldConfig, self.cfg.world)
        summary = build(world_cfg, self.world, overwrite=True)
        return {"items": sum(sum(c.values()) for c in summary["counts"].values())}

    def train_image_tokenizer(self) -> dict:
        from mio.train.image_tokenizer import train_from_config

        metrics = train_from_config(self.cfg.image_tokenizer, self.tokenizers / "image")
        return {k: metrics[k] for k in ("psnr", "ssim", "judge_exact", "usage") if k in metrics}

    def train_speech_tokenizer(self) -> dict:
        from mio.demo.report import TOKENIZER_HEADLINES, numeric_leaves
        from mio.train.speech_tokenizer import train_from_config

        metrics = numeric_leaves(train_from_config(self.cfg.speech_tokenizer, self.tokenizers / "speech"))
        return {k: metrics[k] for k in TOKENIZER_HEADLINES["speech"] if k in metrics}

    def step_media_tokenizers(self) -> dict:
        """Both media tokenizers: at once in two worker processes (`parallel_tokenizers`), or
        one after the other here."""
        if not self.cfg.parallel_tokenizers:
            return {"image": self.train_image_tokenizer(), "speech": self.train_speech_tokenizer()}
        threads = max(1, torch.get_num_threads() // 2)
        level = logging.getLogger().getEffectiveLevel()
        # spawn, not fork: a forked child of a process that has run torch's thread pool can hang.
        with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_init_worker, initargs=(threads, level)) as pool:
            image = pool.submit(self.train_image_tokenizer)
            speech = pool.submit(self.train_speech_tokenizer)
            return {"image": image.result(), "speech": speech.result()}

    def step_text_tokenizer(self) -> dict:
        from mio.train.text_tokenizer import TextTokenizerConfig, build

        cfg = TextTokenizerConfig(
            out_dir=str(self.tokenizers / "text"),
            manifests=sorted(str(p) for p in (self.world / "pretrain").glob("*.jsonl")),
            sampled_manifests=sorted(str(p) for p in (self.world / "sft").glob("*.jsonl")),
            sample_records=self.cfg.text_tokenizer_sft_records,
            vocab_size=self.cfg.text_vocab_size, layout=self.layout())
        config_lib.save(cfg, self.configs / "text_tokenizer.toml")
        tokenizer = build(cfg)
        tokenizer.save_pretrained(cfg.out_dir)
        return {"tokens": len(tokenizer)}

    def step_prepare(self) -> dict:
        from mio.data.encode import EncodeConfig
        from mio.data.prepare import PrepareConfig, prepare
        from mio.tokenizers.base import load_tokenizer
        from mio.toyworld.videos import PREPARE_FRAMES
        from mio.toyworld.world import WorldConfig

        world_cfg = config_lib.load(WorldConfig, self.cfg.world)
        image = load_tokenizer(self.tokenizers / "image")
        speech = load_tokenizer(self.tokenizers / "speech")
        pretrain = {p.stem: [str(p)] for p in sorted((self.world / "pretrain").glob("*.jsonl"))}
        sft = [str(p) for p in sorted((self.world / "sft").glob("*.jsonl"))]

        def config(output: str, manifests: dict, asr_template: str) -> PrepareConfig:
            return PrepareConfig(
                output_dir=str(self.shards / output), text_tokenizer=str(self.tokenizers / "text"),
                typed_manifests=manifests, image_tokenizer=str(self.tokenizers / "image"),
                speech_tokenizer=str(self.tokenizers / "speech"), layout=self.layout(), overwrite=True,
                encode=EncodeConfig(asr_template=asr_template, speech_frame_rate=speech.frame_rate,
                                    min_video_frames=world_cfg.min_video_frames, max_video_frames=world_cfg.max_video_frames),
                **PREPARE_FRAMES,
            )

        main_cfg = config("main", {**pretrain, "sft": sft}, "asr")
        # Stage III reads its speech-text pairs with the paper's Stage III ASR template.
        stage3_cfg = config("stage3", {"speech_text_pair": pretrain["speech_text_pair"]}, STAGE3_ASR_TEMPLATE)
        config_lib.save(main_cfg, self.configs / "prepare_main.toml")
        config_lib.save(stage3_cfg, self.configs / "prepare_stage3.toml")
        main = prepare(main_cfg, image, speech)
        stage3 = prepare(stage3_cfg, image, speech)
        return {"tokens": {t: s["tokens"] for t, s in main["data_types"].items()},
                "stage3_tokens": {t: s["tokens"] for t, s in stage3["data_types"].items()}}

    def step_stage(self, index: int) -> dict:
        from mio.train.loop import Stage

        cfg = self._stage_config(self.cfg.stages[index], self.layout())
        if not cfg.init_from and index > 0:
            cfg.init_from = str(self.run_dir(self.stage_names[index - 1]))
        stage = Stage(cfg, resume=True)  # fills in the model shape a stage after the first inherits
        config_lib.save(cfg, self.configs / f"{cfg.name}.toml")
        final = stage.run()
        run = json.loads((Path(cfg.out_dir) / RUN_FILE).read_text())
        return {"final_loss": final.get("loss"), "data_shares": run.get("data_shares")}

    def step_eval(self, stage: str, name: str) -> dict:
        from mio.api import MIO
        from mio.eval.harness import evaluate, write_outputs
        from mio.generate import DecodingConfig

        model = MIO.from_pretrained(self.run_dir(stage), device=self.cfg.device)
        decoding = DecodingConfig.greedy() if self.cfg.eval_greedy else None
        result, runner = evaluate(model, f"{name} ({stage})", self.world, limit=self.cfg.eval_limit,
                                  base=name == "base", batch_size=self.cfg.eval_batch_size, decoding=decoding,
                                  suite_limits=self.cfg.eval_suite_limits)
        write_outputs(result, runner, self.out / "eval" / name, self.cfg.eval_samples)
        return {"suites": len(result["suites"]), "skipped": len(result["skipped"])}

    def step_diagnosis(self) -> dict:
        """Code losses of the base and instruct checkpoints and the tokenizers' consistency
        (`mio.eval.diagnosis`), saved as `diagnosis.json` for the report."""
        from mio.eval.diagnosis import DIAGNOSIS_FILE, diagnose

        metrics_path = self.tokenizers / "image" / "metrics.json"
        tokenizer_metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        checkpoints = {"base": (self.run_dir(self.base_stage()), True),
                       "instruct": (self.run_dir(self.stage_names[-1]), False)}
        result = diagnose(self.world, checkpoints, self.cfg.diagnosis_items, tokenizer_metrics, self.cfg.device)
        (self.out / DIAGNOSIS_FILE).write_text(json.dumps(result, indent=1))
        return {name: {f"{kind}_{split}": losses[f"{kind}_code_loss"][f"{split}_mean"]
                       for kind in ("image", "speech") for split in ("train", "heldout")}
                for name, losses in result["checkpoints"].items()}

    def step_report(self) -> dict:
        from mio.demo.report import write_report

        paths = write_report(self.out, self.preset, [str(self.run_dir(s)) for s in self.stage_names], self.cfg.eval_samples)
        return {"report": str(paths[0])}

    def steps(self) -> list[tuple[str, Callable[[], dict]]]:
        """Every step in order, as (name, function)."""
        out: list[tuple[str, Callable[[], dict]]] = [
            ("world", self.step_world),
            ("media_tokenizers", self.step_media_tokenizers),
            ("text_tokenizer", self.step_text_tokenizer),
            ("prepare", self.step_prepare),
        ]
        out += [(name, lambda i=i: self.step_stage(i)) for i, name in enumerate(self.stage_names)]
        out += [("eval_base", lambda: self.step_eval(self.base_stage(), "base")),
                ("eval_instruct", lambda: self.step_eval(self.stage_names[-1], "instruct")),
                ("diagnosis", self.step_diagnosis),
                ("report", self.step_report)]
        return out


def _init_worker(threads: int, log_level: int) -> None:
    """A worker process of the demo: its share of the CPU threads, the CLI's log format."""
    torch.set_num_threads(threads)
    configure_logging(log_level)


def run_demo(cfg: DemoConfig, out: str | Path, preset: str = "custom", restart: bool = False) -> dict:
    """Run every unfinished step; returns the state (step -> seconds and a summary)."""
    cfg.validate()
    out = Path(out)
    if restart:
        # Forget finished steps and the stages' checkpoints (they would be resumed).
        (out / STATE_FILE).unlink(missing_ok=True)
        shutil.rmtree(out / "runs", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    demo = Demo(cfg, out, preset)
    state = DemoState(out, preset)
    steps = demo.steps()
    names = [name for name, _ in steps]
    started = time.monotonic()
    for k, (name, fn) in enumerate(steps, 1):
        if state.done(name):
            log.info("[%d/%d] %s: already done (%s)", k, len(steps), name, _fmt(state.seconds(name)))
            continue
        log.info("[%d/%d] %s: starting (about %s left in all)", k, len(steps), name,
                 _fmt(time_left(names, state, cfg.estimated_seconds)))
        t0 = time.monotonic()
        info = fn()
        state.finish(name, time.monotonic() - t0, info)
        log.info("[%d/%d] %s: done in %s; about %s left", k, len(steps), name, _fmt(state.seconds(name)),
                 _fmt(time_left(names, state, cfg.estimated_seconds)))
    total = sum(state.seconds(n) for n in names)
    log.info("demo finished: %s of steps (%s this run); report: %s", _fmt(total), _fmt(time.monotonic() - started),
             out / "report.html")
    return state.data
