"""`mio bench generate`: generation throughput, the engine against transformers' `generate`."""

from __future__ import annotations

import argparse
import logging

import torch

from mio.cli.results import emit
from mio.device import resolve_device
from mio.eval.bench_generate import PRESETS, build, measure

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), default="small", help="model and workload size")
    p.add_argument("--new-tokens", type=int, help="tokens generated per row (default: the preset's)")
    p.add_argument("--repeats", type=int, help="timed runs per measurement; the best counts (default: the preset's)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--json", help="also write the result to this file")


def run(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    setup = build(preset, resolve_device(args.device))
    if args.new_tokens:
        setup.new_tokens = args.new_tokens
    if args.repeats:
        setup.repeats = args.repeats
    log.info("benchmarking %s on %s", args.preset, setup.model.device)
    result = measure(setup)
    emit(result, args.json)
    return 0
