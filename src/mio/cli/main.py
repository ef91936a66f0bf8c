"""The `mio` command.

Each command is one module of `mio.cli`, named for it, providing `add_arguments(parser)`
and `run(args) -> int | None`; the library does the work. Only the module of the command
being run is imported, so `mio --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from mio.logs import configure_logging

# name -> (module, one-line help). Nested commands use "group name".
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("mio.cli.demo", "the whole recipe on the embedded world: world, tokenizers, Stage I-III, SFT, evaluation, report"),
    "prepare": ("mio.cli.prepare", "tokenize a corpus's media once, offline, into training shards"),
    "train": ("mio.cli.train", "run a training stage (or a chain of stages) from a TOML config"),
    "tokenizer train": ("mio.cli.tokenizer_train", "train an embedded image or speech tokenizer"),
    "bench train": ("mio.cli.bench_train", "training throughput: masked packing vs pad-to-longest batching"),
    "bench generate": ("mio.cli.bench_generate", "generation throughput: the engine vs transformers' generate"),
    "bench serve": ("mio.cli.bench_serve", "server throughput and latency: one client at a time vs many at once"),
    "generate": ("mio.cli.generate", "generate from a multimodal prompt; media outputs are written to a folder"),
    "chat": ("mio.cli.chat", "chat in the terminal with text, image, audio and video inputs"),
    "toyworld": ("mio.cli.toyworld", "build the embedded world's corpus: manifests for pre-training, SFT and evaluation"),
    "eval": ("mio.cli.eval", "score a checkpoint on the evaluation suites"),
    "convert": ("mio.cli.convert", "rewrite a released MIO-7B directory's pickled weights as safetensors"),
    "serve": ("mio.cli.serve", "an OpenAI-compatible chat-completions server"),
    "ui": ("mio.cli.ui", "a web UI to chat with a model in the browser (text, images, audio, speech)"),
}


def _parser(selected: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mio", description="MIO: a foundation model on multimodal tokens.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, and the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}
    for name, (module, help_text) in COMMANDS.items():
        parts = name.split()
        if len(parts) == 1:
            p = sub.add_parser(name, help=help_text, description=help_text)
        else:
            group, leaf = parts
            if group not in groups:
                gp = sub.add_parser(group, help=f"{group} commands")
                groups[group] = gp.add_subparsers(dest=f"{group}_command", metavar="COMMAND", required=True)
            p = groups[group].add_parser(leaf, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if parts == selected[: len(parts)]:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    selected = [a for a in argv if not a.startswith("-")][:2]
    args = _parser(selected).parse_args(argv)
    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    if getattr(args, "_module", None) is None:
        _parser([]).print_help()
        return 0
    try:
        return importlib.import_module(args._module).run(args) or 0
    except (OSError, ValueError) as e:
        # User-facing problems (bad config, missing or unwritable file, bad input) get one
        # clear line; -v adds the traceback.
        logging.getLogger("mio").error("%s", e, exc_info=args.verbose)
        return 2
