"""`mio demo`: the paper's recipe end to end on the embedded world, from nothing to a report (see `mio.demo.pipeline`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mio.demo.pipeline import PRESETS, load_demo_config, preset_path, run_demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="default", choices=PRESETS, help="scale of the run (default: default)")
    parser.add_argument("--config", help="a DemoConfig TOML instead of a named preset")
    parser.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    parser.add_argument("--restart", action="store_true", help="forget finished steps and run everything again")


def run(args: argparse.Namespace) -> int:
    path = Path(args.config) if args.config else preset_path(args.preset)
    preset = path.stem if args.config else args.preset
    run_demo(load_demo_config(path), args.out, preset, args.restart)
    return 0
