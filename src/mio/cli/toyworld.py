"""`mio toyworld CONFIG`: build the embedded world's corpus (manifests for pre-training, SFT and evaluation)."""

from __future__ import annotations

import argparse

from mio.config import describe_keys, load
from mio.toyworld.build import build
from mio.toyworld.world import WorldConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    docs = describe_keys(parser, WorldConfig)
    parser.add_argument("config", help="TOML file holding a WorldConfig (e.g. configs/toyworld/default.toml)")
    parser.add_argument("--out", help="output directory (default: the config's out_dir)")
    parser.add_argument("--workers", type=int, help=docs.get("workers"))
    parser.add_argument("--overwrite", action="store_true", help="replace a world already in the output directory")


def run(args: argparse.Namespace) -> int:
    overrides = {"workers": args.workers} if args.workers else {}
    cfg = load(WorldConfig, args.config, overrides)
    build(cfg, args.out, overwrite=args.overwrite)
    return 0

