"""`mio bench train`: training throughput, masked packing against pad-to-longest batching, and
document attention against the explicit mask and plain causal attention."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from mio.eval.bench_train import PRESETS, benchmark

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", type=Path, help="write the results as JSON to this path")
    p.add_argument("--preset", choices=sorted(PRESETS), default="small", help="model and batch shape (default: small)")
    p.add_argument("--steps", type=int, help="timed optimizer steps per method (default: the preset's)")
    p.add_argument("--context-length", type=int, help="row length L and the baseline's truncation cap (default: the preset's)")
    p.add_argument("--batch-size", type=int, help="rows per batch B for both methods (default: the preset's)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if available, else cpu")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic corpus")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="auto: bf16 on a GPU, else fp32")
    p.add_argument("--peak-tflops", type=float, help="the device's peak TFLOP/s for MFU (default: known GPUs' bf16 peak)")


def run(args: argparse.Namespace) -> int:
    result = benchmark(args.preset, args.steps, args.context_length, args.batch_size, args.device, args.seed,
                       args.precision, args.peak_tflops)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        log.info("wrote %s", args.json)
    return 0
