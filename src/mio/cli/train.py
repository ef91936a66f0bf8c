"""`mio train STAGE.toml ... [--resume] [--set KEY=VALUE]`: run training stages in order (see `mio.train.loop`)."""

from __future__ import annotations

import argparse
import tomllib

from mio.train import distributed
from mio.train.loop import run_stages


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("configs", nargs="+", help="stage TOML configs, run in order")
    p.add_argument("--resume", action="store_true", help="continue each stage from its latest checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set steps=10 --set optim.lr=1e-4 (applies to every stage)")


def _parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    run_stages(args.configs, resume=args.resume, overrides=_parse_overrides(args.set))
    distributed.shutdown()
    return 0
