"""`mio tokenizer train text CONFIG`: the text tokenizer with MIO's chat and media tokens.

Two ways, one config: train a byte-level BPE on the text of manifests (the embedded
default), or extend a pretrained tokenizer directory (Yi-6B's at paper scale) with the
4 + image + speech media tokens. Either way the result is a HF tokenizer directory whose
media ranges are contiguous, which `mio.vocab.Vocab` and `mio prepare` read.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mio import config as config_lib
from mio.data.manifest import read_manifest
from mio.templates import PRETRAIN_TEMPLATES, SYSTEM_PROMPTS
from mio.tokenizers.text import add_media_tokens, build_text_tokenizer, load_text_tokenizer
from mio.vocab import Vocab, VocabLayout

log = logging.getLogger(__name__)


@dataclass
class TextTokenizerConfig:
    """How the text tokenizer is made."""

    out_dir: str = ""
    """Where the tokenizer directory is written."""
    base: str = ""
    """A pretrained tokenizer directory to extend (e.g. Yi-6B); empty = train a BPE."""
    manifests: list[str] = field(default_factory=list)
    """Manifests whose text the BPE is trained on (ignored with `base`)."""
    sampled_manifests: list[str] = field(default_factory=list)
    """Manifests of which only the first `sample_records` records are trained on: a fixed
    sample, so that growing such a manifest (more SFT conversations of a task) leaves the
    tokenizer, and so every token id and everything trained on them, unchanged."""
    sample_records: int = 0
    """Records read from each of `sampled_manifests` (required with them)."""
    vocab_size: int = 4096
    """Text vocabulary size of the trained BPE, before media tokens."""
    layout: VocabLayout = field(default_factory=VocabLayout)
    """Media tokens to add (must match the image and speech tokenizers)."""

    def validate(self) -> None:
        if not self.base and not (self.manifests or self.sampled_manifests):
            raise ValueError("set `base` (a pretrained tokenizer) or `manifests` (text to train a BPE on)")
        if self.sampled_manifests and self.sample_records < 1:
            raise ValueError("sample_records must be >= 1 when sampled_manifests are set")
        if self.vocab_size < 300:
            raise ValueError("vocab_size must be >= 300 (the byte alphabet plus specials)")


def manifest_texts(paths: Sequence[str], sampled: Sequence[str] = (), sample_records: int = 0) -> Iterator[str]:
    """All text of the manifests `paths` and of the first `sample_records` records of each of
    `sampled`, plus the fixed strings of the templates and system prompts."""
    yield from PRETRAIN_TEMPLATES.values()
    yield from SYSTEM_PROMPTS.values()
    records = [read_manifest(path) for path in paths]
    records += [itertools.islice(read_manifest(path), sample_records) for path in sampled]
    for record in itertools.chain.from_iterable(records):
        parts = list(record.segments)
        for _, content in record.messages:
            parts.extend([content] if isinstance(content, str) else content)
        yield from (p for p in parts if isinstance(p, str))


def build(cfg: TextTokenizerConfig):
    """Make the tokenizer described by `cfg` (not saved)."""
    if cfg.base:
        tokenizer = load_text_tokenizer(cfg.base)
        add_media_tokens(tokenizer, cfg.layout)
    else:
        texts = manifest_texts(cfg.manifests, cfg.sampled_manifests, cfg.sample_records)
        tokenizer = build_text_tokenizer(texts, cfg.vocab_size, cfg.layout)
    Vocab(tokenizer, cfg.layout)  # checks every media token is present and contiguous
    return tokenizer


def train_from_config(config_path: str, out_dir: str | None = None) -> Path:
    """Build the tokenizer of a TOML config and save it to `out_dir` (or the config's)."""
    cfg = config_lib.load(TextTokenizerConfig, config_path)
    out = Path(out_dir or cfg.out_dir)
    if not str(out):
        raise ValueError("no output directory: set out_dir in the config or pass --out")
    tokenizer = build(cfg)
    tokenizer.save_pretrained(out)
    (out / "mio_layout.json").write_text(json.dumps(config_lib.to_dict(cfg.layout), indent=2))
    log.info("text tokenizer with %d tokens written to %s", len(tokenizer), out)
    return out
