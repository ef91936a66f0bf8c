"""`mio eval --model DIR`: score a checkpoint on the evaluation suites of the embedded world
(`--world`, `--suite`), or on one of the paper's benchmarks read from its public file layout
(`--benchmark NAME --data PATH`, `mio.eval.benchmarks`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mio.api import MIO
from mio.eval import benchmarks
from mio.eval.harness import DEFAULT_WORLD, evaluate, is_base, write_outputs
from mio.eval.suites import SUITES
from mio.generate import DecodingConfig

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="run directory of the checkpoint")
    parser.add_argument("--world", help=f"a world built by `mio toyworld` (default {DEFAULT_WORLD})")
    parser.add_argument("--suite", nargs="+", choices=list(SUITES), metavar="NAME",
                        help="suites to run (default: all): " + ", ".join(SUITES))
    parser.add_argument("--benchmark", choices=benchmarks.benchmark_names(), metavar="NAME",
                        help="instead of the world's suites, a paper benchmark read from --data: "
                        + ", ".join(benchmarks.BENCHMARKS))
    parser.add_argument("--data", help="the benchmark's files, in its public layout")
    parser.add_argument("--json", help="also write metrics.json here")
    parser.add_argument("--out", help="output directory (default: MODEL/eval, MODEL/eval/NAME for a benchmark)")
    parser.add_argument("--limit", type=int, help="at most this many items per suite (a benchmark: its first N)")
    parser.add_argument("--base", action="store_true", help="treat as a base checkpoint (pre-training templates)")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per generation batch")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (replies are reproducible)")
    parser.add_argument("--greedy", action="store_true", help="greedy decoding for every modality instead of Table 11's")
    parser.add_argument("--samples", type=int, default=4, help="replies per suite whose media are written")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be >= 1")
    if (args.benchmark is None) != (args.data is None):
        raise ValueError("--benchmark NAME and --data PATH go together")
    if args.benchmark and (args.world or args.suite):
        raise ValueError("--benchmark/--data and --world/--suite are exclusive: score a benchmark or the world's suites")
    model = MIO.from_pretrained(args.model, device=args.device)
    base = args.base or is_base(args.model)
    log.info("evaluating %s as %s checkpoint", args.model, "a base" if base else "an instruction-tuned")
    if args.benchmark:
        return run_benchmark(args, model, base)
    result, runner = evaluate(model, args.model, args.world or DEFAULT_WORLD, args.suite, args.limit, base,
                              args.batch_size, args.seed, DecodingConfig.greedy() if args.greedy else None)
    out = Path(args.out) if args.out else Path(args.model) / "eval"
    write_outputs(result, runner, out, args.samples, args.json)
    log.info("wrote %s and %s", out / "metrics.json", out / "metrics.md")
    return 0


def run_benchmark(args: argparse.Namespace, model: MIO, base: bool) -> int:
    """`--benchmark NAME --data PATH`: score, log the headline, write the outputs."""
    result = {"model": args.model, **benchmarks.run_benchmark(model, args.benchmark, args.data, args.limit,
                                                              args.batch_size, base, args.greedy, args.seed)}
    out = Path(args.out) if args.out else Path(args.model) / "eval" / args.benchmark
    benchmarks.write_outputs(result, out, args.json)
    log.info("%s", benchmarks.summary(result))
    log.info("wrote %s, %s and %s", out / "metrics.json", out / "metrics.md", out / "replies.jsonl")
    return 0
