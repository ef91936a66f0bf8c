"""`mio prepare CONFIG`: tokenize a corpus's media once, offline, into training shards."""

from __future__ import annotations

import argparse

from mio.config import describe_keys, load
from mio.data.prepare import PrepareConfig, prepare


def add_arguments(parser: argparse.ArgumentParser) -> None:
    docs = describe_keys(parser, PrepareConfig)
    parser.add_argument("config", help="TOML file holding a PrepareConfig (keys below)")
    parser.add_argument("--output-dir", help="override output_dir")
    parser.add_argument("--overwrite", action="store_true", help=docs.get("overwrite"))


def run(args: argparse.Namespace) -> int:
    overrides = {}
    if args.output_dir:
        overrides["output_dir"] = args.output_dir
    if args.overwrite:
        overrides["overwrite"] = True
    prepare(load(PrepareConfig, args.config, overrides))
    return 0
