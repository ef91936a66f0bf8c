"""`mio convert SRC DST`: a released MIO-7B directory -> the same layout with safetensors weights."""

from __future__ import annotations

import argparse

from mio.released import convert


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="the released MIO-7B-Base or MIO-7B-Instruct directory")
    parser.add_argument("dst", help="where to write the converted copy")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty DST")


def run(args: argparse.Namespace) -> int:
    convert(args.src, args.dst, overwrite=args.overwrite)
    return 0
