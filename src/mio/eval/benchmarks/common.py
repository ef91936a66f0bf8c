"""What every benchmark runner shares: asking the model in logged batches, intervals,
most-frequent-answer baselines, and writing `metrics.json`, `metrics.md` and
`replies.jsonl`.

A runner hands `Asker.ask` the content of one user turn per item (instruction-tuned
checkpoints, asked through `MIO.chat_batch` with the Yi chat template) or one raw prompt
per item (base checkpoints, continued by `MIO.complete_batch`); media go in as paths
(`Image(image=path)`, `Speech(wave=path)`, `Video(frames=path)`), so a batch's files are
read only when the batch is asked.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mio.eval import metrics
from mio.eval.suites import text_of
from mio.generate import MAX_SEED, DecodingConfig
from mio.judges import speech as speech_judge
from mio.segments import Segment

log = logging.getLogger(__name__)

Prompt = list
"""One item's prompt: segments and strings (a user turn's content, or a raw base prompt)."""


class BenchmarkSkipped(RuntimeError):
    """A benchmark cannot run here (no judge, or no template for this checkpoint); the
    message says why."""


@dataclass
class Asker:
    """Asks a model (`mio.api.MIO`, or anything with `chat_batch` / `complete_batch`) and
    keeps every reply's text (`replies`: one `{"id", "text"}` record per item)."""

    model: object
    benchmark: str
    base: bool = False
    """A base checkpoint: prompts are raw sequences continued with `complete_batch`."""
    batch_size: int = 8
    seed: int = 0
    decoding: DecodingConfig | None = None
    """None: the model's defaults by output modality (the paper's Table 11)."""
    replies: list[dict] = field(default_factory=list)

    def ask(self, ids: Sequence[str], prompts: Sequence[Prompt], output: str, max_new_tokens: int | Sequence[int],
            mode: str = "std") -> list[list[Segment]]:
        """The replies to `prompts`, `batch_size` at a time, with one progress line per batch.
        `output` is the one modality a reply may have (text, speech); `max_new_tokens` is one
        budget for all items or one per item (a batch gets its items' largest); `mode` is the
        chat mode of instruction-tuned checkpoints (`voice` for speech replies)."""
        budgets = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
        batches = math.ceil(len(prompts) / self.batch_size)
        started = time.monotonic()
        replies: list[list[Segment]] = []
        for number, start in enumerate(range(0, len(prompts), self.batch_size), 1):
            chunk = slice(start, start + self.batch_size)
            common = {"output_modalities": {output}, "decoding": self.decoding, "batch_size": self.batch_size,
                      "seed": (self.seed + start) % (MAX_SEED + 1), "max_new_tokens": max(budgets[chunk])}
            if self.base:
                batch = self.model.complete_batch([list(p) for p in prompts[chunk]], **common)
            else:
                conversations = [[{"role": "user", "content": list(p)}] for p in prompts[chunk]]
                batch = self.model.chat_batch(conversations, mode=mode, **common)
            replies += batch
            self.replies += [{"id": i, "text": text_of(r)} for i, r in zip(ids[chunk], batch)]
            log.info("%s: batch %d/%d done (%d/%d items, %.1fs)", self.benchmark, number, batches, len(replies),
                     len(prompts), time.monotonic() - started)
        return replies


def take(items: list, limit: int | None) -> list:
    """The first `limit` items (all of them for None)."""
    return items if limit is None else items[:limit]


def most_frequent(values: Iterable[str]) -> str:
    """The most frequent value; ties go to the one seen first ('' for no values)."""
    counts = Counter(values)
    return counts.most_common(1)[0][0] if counts else ""


def interval(values: Sequence[float]) -> list[float]:
    """The 95% interval of a mean of per-item scores: Wilson for 0/1 scores, else a bootstrap."""
    return list(metrics.mean_interval(values))


def wer_with_interval(references: Sequence[str], hypotheses: Sequence[str]) -> tuple[float, list[float]]:
    """Corpus WER (Whisper's English normalisation) and its 95% bootstrap interval over items."""
    errors = speech_judge.word_errors(references, hypotheses)
    corpus = lambda pairs: sum(e for e, _ in pairs) / max(1, sum(w for _, w in pairs))
    return corpus(errors), list(metrics.bootstrap_interval(errors, statistic=corpus))


def require_file(path: Path, what: str) -> Path:
    """`path`, or FileNotFoundError naming it and what it should be."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    return path


def read_json(path: Path, what: str):
    """A JSON file of the benchmark's layout (FileNotFoundError / ValueError naming it)."""
    try:
        return json.loads(require_file(path, what).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


# ---- output


def _format(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _headline(scores: dict, metric: str) -> tuple[str, str]:
    """`metric value [low, high]` and the blind baselines' `name value, ...`."""
    low, high = scores["ci95"].get(metric, (math.nan, math.nan))
    baselines = ", ".join(f"{b} {_format(s[metric])}" for b, s in scores.get("baselines", {}).items() if metric in s)
    return f"{metric} {_format(scores[metric])} [{low:.3f}, {high:.3f}]", baselines


def summary(result: dict) -> str:
    """One line: the headline with its interval and the blind baselines (or why it was skipped)."""
    name = result["benchmark"]
    if name in result["skipped"]:
        return f"{name}: skipped: {result['skipped'][name]}"
    scores = result["suites"][name]
    headline, baselines = _headline(scores, result["headline"])
    return f"{name} (n={scores['n']}): {headline}; blind baselines: {baselines}"


def markdown_table(result: dict) -> str:
    """The result as Markdown: a summary row (headline, interval, blind baselines), then
    every metric with its interval."""
    name = result["benchmark"]
    lines = [f"Benchmark `{name}` on `{result.get('model', '')}` "
             f"({'base' if result['base'] else 'instruction-tuned'}, data `{result['data']}`)", ""]
    if name in result["skipped"]:
        return "\n".join(lines + [f"Skipped: {result['skipped'][name]}"]) + "\n"
    scores = result["suites"][name]
    headline, baselines = _headline(scores, result["headline"])
    lines += ["| benchmark | n | headline [95% interval] | blind baselines |", "|---|---|---|---|",
              f"| {name} | {scores['n']} | {headline} | {baselines} |",
              "", "| metric | value | 95% interval |", "|---|---|---|"]
    for key, value in scores.items():
        if key in ("n", "ci95", "baselines"):
            continue
        bounds = scores["ci95"].get(key)
        lines.append(f"| {key} | {_format(value)} | {f'[{bounds[0]:.3f}, {bounds[1]:.3f}]' if bounds else ''} |")
    return "\n".join(lines) + "\n"


def write_outputs(result: dict, out: Path, json_path: str | Path | None = None) -> None:
    """`out/metrics.json` (the result without its replies; also to `json_path`),
    `out/metrics.md` and `out/replies.jsonl` (one record per item)."""
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps({k: v for k, v in result.items() if k != "replies"}, indent=1)
    (out / "metrics.json").write_text(text)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(text)
    (out / "metrics.md").write_text(markdown_table(result))
    with open(out / "replies.jsonl", "w", encoding="utf-8") as f:
        for record in result.get("replies", []):
            f.write(json.dumps(record) + "\n")
