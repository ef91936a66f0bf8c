"""`mio tokenizer train {text,image,speech} CONFIG`: make a tokenizer from a TOML config."""

from __future__ import annotations

import argparse
import importlib

TRAINERS = {
    "text": "mio.train.text_tokenizer",
    "image": "mio.train.image_tokenizer",
    "speech": "mio.train.speech_tokenizer",
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=sorted(TRAINERS), help="which tokenizer to train")
    p.add_argument("config", help="TOML config (see configs/tokenizer/)")
    p.add_argument("--out", help="output directory (overrides the config's out_dir)")


def run(args: argparse.Namespace) -> int:
    importlib.import_module(TRAINERS[args.kind]).train_from_config(args.config, out_dir=args.out)
    return 0
