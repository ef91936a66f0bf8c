"""The paper's benchmarks, each read from its public file layout on disk.

    mio eval --model DIR --benchmark vqav2 --data /data/vqav2 --limit 500

| benchmark | data (public layout) | headline |
|---|---|---|
| `coco-captions` | Karpathy `dataset_coco.json` + `val2014/` | CIDEr |
| `vqav2` | `v2_OpenEnded_mscoco_val2014_questions.json`, `v2_mscoco_val2014_annotations.json`, `val2014/` | VQA accuracy |
| `librispeech-asr` | `LibriSpeech/test-clean/{speaker}/{chapter}/` transcripts + FLAC | WER |
| `librispeech-tts` | the same files; the Whisper judge transcribes the model's speech | WER |
| `msvd-qa` | `test_qa.json` + `videos/` (+ `youtube_mapping.txt`) | accuracy |
| `mmlu` | `data/dev/*_dev.csv`, `data/test/*_test.csv` | accuracy (5-shot) |

Instruction-tuned checkpoints are asked with the SFT evaluation prompts (Table 12,
`mio.prompts`), base checkpoints with the pre-training templates (Appendix B); decoding is
the model's default for the output modality (Table 11) unless `greedy`. Every score comes
with its 95% interval and blind baselines scored by the same code. The modules say each
benchmark's layout, prompt, metric and baseline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mio.eval.benchmarks import coco, librispeech, mmlu, msvd, vqav2
from mio.eval.benchmarks.common import Asker, BenchmarkSkipped, markdown_table, summary, write_outputs
from mio.generate import DecodingConfig

log = logging.getLogger(__name__)

__all__ = ["BENCHMARKS", "ALIASES", "Benchmark", "BenchmarkSkipped", "benchmark_names", "markdown_table", "resolve",
           "run_benchmark", "summary", "write_outputs"]


@dataclass(frozen=True)
class Benchmark:
    """A benchmark's runner (`run(asker, data, limit) -> scores`) and headline metric."""

    run: Callable[[Asker, Path, int | None], dict]
    headline: str


BENCHMARKS: dict[str, Benchmark] = {
    "coco-captions": Benchmark(coco.run, "cider"),
    "vqav2": Benchmark(vqav2.run, "vqa_accuracy"),
    "librispeech-asr": Benchmark(librispeech.run_asr, "wer"),
    "librispeech-tts": Benchmark(librispeech.run_tts, "wer"),
    "msvd-qa": Benchmark(msvd.run, "accuracy"),
    "mmlu": Benchmark(mmlu.run, "accuracy"),
}
ALIASES = {"coco": "coco-captions", "librispeech": "librispeech-asr", "librispeech_tts": "librispeech-tts",
           "msvd_qa": "msvd-qa"}
"""The names DESIGN.md's machine-readable outputs use."""


def benchmark_names() -> list[str]:
    """Every accepted name: the benchmarks, then their aliases."""
    return [*BENCHMARKS, *ALIASES]


def resolve(name: str) -> str:
    """The benchmark a name or alias stands for (ValueError for an unknown one)."""
    canonical = ALIASES.get(name, name)
    if canonical not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; benchmarks: {', '.join(BENCHMARKS)}")
    return canonical


def run_benchmark(mio, name: str, data: str | Path, limit: int | None = None, batch_size: int = 8, base: bool = False,
                  greedy: bool = False, seed: int = 0) -> dict:
    """Score a loaded model (`mio.api.MIO`) on a benchmark read from `data`.

    Returns `{"suites": {name: {METRIC: value, ..., "n", "ci95": {METRIC: [low, high]},
    "baselines": {BASELINE: {METRIC: value}}}}, "skipped": {name: reason}, "seconds": {name: s},
    "benchmark", "headline", "data", "base", "decoding", "replies": [{"id", "text", ...}]}`;
    a benchmark that cannot run here (no judge; no template for a base checkpoint) is under
    `skipped`. Missing files raise FileNotFoundError, malformed ones ValueError, naming the
    file. `limit` takes the first items in the benchmark's fixed order."""
    benchmark = BENCHMARKS[resolve(name)]
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: benchmark data folder not found")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    asker = Asker(mio, name, base=base, batch_size=batch_size, seed=seed,
                  decoding=DecodingConfig.greedy() if greedy else None)
    result = {"suites": {}, "skipped": {}, "seconds": {}, "benchmark": name, "headline": benchmark.headline,
              "data": str(data), "base": base, "decoding": "greedy" if greedy else "table 11"}
    started = time.monotonic()
    try:
        result["suites"][name] = benchmark.run(asker, data, limit)
    except BenchmarkSkipped as e:
        result["skipped"][name] = str(e)
        log.warning("%s: skipped: %s", name, e)
    result["seconds"][name] = round(time.monotonic() - started, 2)
    result["replies"] = asker.replies
    return result
