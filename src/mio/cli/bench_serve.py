"""`mio bench serve`: the chat-completions server's throughput and latency, one client at a
time and many at once (`mio.eval.bench_serve` says exactly what is measured)."""

from __future__ import annotations

import argparse
import logging

import torch

from mio.api import MIO
from mio.cli.results import emit
from mio.device import resolve_device
from mio.eval.bench_generate import PRESETS, build
from mio.eval.bench_serve import ServeBenchConfig, describe, measure

log = logging.getLogger(__name__)

RUN_DIR_MAX_TOKENS = 64
"""New tokens per reply for a `--model` run directory (a preset has its own)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", help="run directory to serve (default: a random model of --preset's size)")
    source.add_argument("--preset", choices=sorted(PRESETS), default="small", help="random model size")
    p.add_argument("--concurrency", type=int, default=16, help="clients sending requests at once")
    p.add_argument("--requests", type=int, help="requests per mode (default: twice --concurrency)")
    p.add_argument("--max-tokens", type=int,
                   help=f"new tokens per reply (default: the preset's; {RUN_DIR_MAX_TOKENS} with --model)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--json", help="also write the result to this file")


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: F401 -- only checking that the serve extra is installed
    except ImportError as e:
        raise OSError(f"{e}; `mio bench serve` needs the serve extra: pip install 'mio[serve]'") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = None if args.model else PRESETS[args.preset]
    default_tokens = RUN_DIR_MAX_TOKENS if preset is None else preset.new_tokens
    config = ServeBenchConfig(requests=2 * args.concurrency if args.requests is None else args.requests,
                              concurrency=args.concurrency,
                              max_tokens=default_tokens if args.max_tokens is None else args.max_tokens)
    config.validate()
    if preset is None:
        mio, source = MIO.from_pretrained(args.model, device=args.device), args.model
    else:
        setup = build(preset, resolve_device(args.device))
        mio = MIO(setup.model, setup.vocab)  # no media tokenizers: the requests are text only
        source = f"random ({args.preset} preset)"
    log.info("benchmarking the server on %s (%s)", mio.device, source)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its line per request would drown the progress
    result = measure(mio, config, describe(mio, source))
    emit(result, args.json)
    return 0
