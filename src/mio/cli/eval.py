"""`mio eval --model DIR`: score a checkpoint on the evaluation suites."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from mio.api import MIO
from mio.eval.harness import DEFAULT_WORLD, evaluate, is_base, write_outputs
from mio.eval.suites import SUITES
from mio.generate import DecodingConfig

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="run directory of the checkpoint")
    parser.add_argument("--world", default=DEFAULT_WORLD, help=f"a world built by `mio toyworld` (default {DEFAULT_WORLD})")
    parser.add_argument("--suite", nargs="+", choices=list(SUITES), metavar="NAME",
                        help="suites to run (default: all): " + ", ".join(SUITES))
    parser.add_argument("--json", help="also write metrics.json here")
    parser.add_argument("--out", help="output directory (default: MODEL/eval)")
    parser.add_argument("--limit", type=int, help="at most this many items per suite")
    parser.add_argument("--base", action="store_true", help="treat as a base checkpoint (pre-training templates)")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per generation batch")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (replies are reproducible)")
    parser.add_argument("--greedy", action="store_true", help="greedy decoding for every modality instead of Table 11's")
    parser.add_argument("--samples", type=int, default=4, help="replies per suite whose media are written")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")


def run(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be >= 1")
    model = MIO.from_pretrained(args.model, device=args.device)
    base = args.base or is_base(args.model)
    log.info("evaluating %s as %s checkpoint", args.model, "a base" if base else "an instruction-tuned")
    result, runner = evaluate(model, args.model, args.world, args.suite, args.limit, base, args.batch_size, args.seed,
                              DecodingConfig.greedy() if args.greedy else None)
    out = Path(args.out) if args.out else Path(args.model) / "eval"
    write_outputs(result, runner, out, args.samples, args.json)
    log.info("wrote %s and %s", out / "metrics.json", out / "metrics.md")
    return 0
