"""`mio eval --model DIR`: score a checkpoint on the evaluation suites.

    mio eval --model runs/sft --world data/toyworld --limit 20 --json metrics.json

Runs the suites (`mio.eval.suites`; all by default, or those named by `--suite`) on the
test items of a built world and writes, in `--out` (default `DIR/eval`):

- `metrics.json`: `{"suites": {SUITE: {METRIC: value, ..., "n": count, "ci95": {METRIC: [low,
  high]}, "baselines": {BASELINE: {METRIC: value}}}}, "model": DIR, "base": bool,
  "skipped": {SUITE: reason}, "seconds": {SUITE: s}}` (also to `--json PATH`); the blind
  baselines (`mio.eval.baselines`) are scored on the same items by the same code;
- `metrics.md`: the same as a Markdown table, each headline metric beside its interval and
  its blind baselines;
- `replies/<suite>.jsonl` (every reply's text, and for spoken replies what the Whisper
  judge heard) and `replies/<suite>/` (the first
  `--samples` replies' pictures, videos and audio).

A checkpoint is a base model (asked with the pre-training templates) when `--base` is given
or its run.json names a stage other than SFT; otherwise it is asked with the SFT prompts.
Suites that cannot run (no Whisper judge for speech output; no pre-training template for a
base model) are listed under `skipped` with the reason, never scored with a stand-in.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from mio.eval.baselines import baseline_scores
from mio.eval.suites import HEADLINE, SUITES, Runner, SuiteSkipped, check_suite_names, run_suite
from mio.train.checkpoint import RUN_FILE

log = logging.getLogger(__name__)

WORLD_FILE = "world.json"
SFT_STAGE = "sft"
DEFAULT_WORLD = "data/toyworld"
DEFAULT_IMAGE_SIZE = 64


def is_base(model_dir: str | Path) -> bool:
    """Whether a run directory holds a base (pre-trained, not SFT) checkpoint: its run.json
    names a stage, and the stage is not SFT. Without a stage (e.g. a released instruct
    checkpoint) it is taken as instruction-tuned."""
    run_file = Path(model_dir) / RUN_FILE
    if not run_file.is_file():
        return False
    stage = json.loads(run_file.read_text()).get("stage")
    return stage is not None and SFT_STAGE not in str(stage).lower()


def world_image_size(world: Path) -> int:
    """The side of the world's images (video frames are read back at this size)."""
    path = world / WORLD_FILE
    if not path.is_file():
        return DEFAULT_IMAGE_SIZE
    return int(json.loads(path.read_text()).get("config", {}).get("image_size", DEFAULT_IMAGE_SIZE))


def evaluate(model, model_name: str, world: str | Path, suites: list[str] | None = None, limit: int | None = None,
             base: bool = False, batch_size: int = 8, seed: int = 0, decoding=None,
             suite_limits: dict[str, int] | None = None, baselines: bool = True) -> tuple[dict, Runner]:
    """Run suites on a loaded model; returns the metrics object and the runner (its replies).
    `limit` caps the items of every suite; `suite_limits` caps named suites instead; with
    `baselines`, every suite also scores its blind baselines on the same items."""
    world = Path(world)
    names = suites or list(SUITES)
    suite_limits = suite_limits or {}
    check_suite_names([*names, *suite_limits])
    runner = Runner(model, base=base, batch_size=batch_size, seed=seed, decoding=decoding)
    image_size = world_image_size(world)
    result = {"suites": {}, "model": model_name, "base": base, "skipped": {}, "seconds": {}}
    for name in names:
        started = time.monotonic()
        n = suite_limits.get(name, limit)
        try:
            result["suites"][name] = run_suite(name, runner, world, n, image_size)
            if baselines:
                result["suites"][name]["baselines"] = baseline_scores(name, world, n, image_size, base)
        except SuiteSkipped as e:
            result["skipped"][name] = str(e)
            log.warning("%s: skipped: %s", name, e)
            continue
        result["seconds"][name] = round(time.monotonic() - started, 2)
        log.info("%s (%.1fs): %s", name, result["seconds"][name], _format_scores(result["suites"][name]))
    return result, runner


def format_value(value) -> str:
    """A metric's value for a log line or a table: floats to three places, a nested group of
    scores (such as `by_kind`) as `name (metric value, ...)`."""
    if isinstance(value, dict):
        return ", ".join(f"{k} ({format_value(v)})" if isinstance(v, dict) else f"{k} {format_value(v)}"
                         for k, v in value.items())
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _format_scores(scores: dict) -> str:
    return ", ".join(f"{k} {format_value(v)}" for k, v in scores.items() if k not in ("n", "ci95", "baselines"))


def headline(name: str, scores: dict) -> str:
    """`metric value [low, high]` of a suite's headline metric."""
    metric = HEADLINE.get(name, "")
    if metric not in scores:
        return ""
    low, high = scores.get("ci95", {}).get(metric, (None, None))
    interval = f" [{low:.2f}, {high:.2f}]" if low is not None else ""
    return f"{metric} {scores[metric]:.3f}{interval}"


def baseline_summary(name: str, scores: dict) -> str:
    """The blind baselines' headline metric, `constant 0.25, prompt_copy 0.00`."""
    metric = HEADLINE.get(name, "")
    return ", ".join(f"{b} {s[metric]:.3f}" for b, s in scores.get("baselines", {}).items() if metric in s)


def markdown_table(result: dict) -> str:
    """The metrics as a Markdown table (one row per suite), skipped suites after it."""
    lines = [f"Evaluation of `{result['model']}` ({'base' if result['base'] else 'instruction-tuned'})", "",
             "| suite | n | headline [95% interval] | blind baselines | all metrics |", "|---|---|---|---|---|"]
    for name, scores in result["suites"].items():
        lines.append(f"| {name} | {scores['n']} | {headline(name, scores)} | {baseline_summary(name, scores)} "
                     f"| {_format_scores(scores)} |")
    if result["skipped"]:
        lines += ["", "Skipped:", ""] + [f"- {name}: {reason}" for name, reason in result["skipped"].items()]
    return "\n".join(lines) + "\n"


def write_outputs(result: dict, runner: Runner, out: Path, samples: int, json_path: str | None = None) -> None:
    """metrics.json, metrics.md, reply texts and the first `samples` replies' media."""
    from mio.api import file_stem, save_segments

    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=1)
    (out / "metrics.json").write_text(text)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(text)
    (out / "metrics.md").write_text(markdown_table(result))
    replies_dir = out / "replies"
    for suite, records in runner.replies.items():
        safe = suite.replace("/", "-")
        replies_dir.mkdir(exist_ok=True)
        with open(replies_dir / f"{safe}.jsonl", "w", encoding="utf-8") as f:
            for record in records:
                kept = {k: record[k] for k in ("id", "text", "heard") if k in record}
                f.write(json.dumps(kept) + "\n")
        for record in records[:samples]:
            save_segments(record["segments"], replies_dir / safe, prefix=file_stem(record["id"]))
