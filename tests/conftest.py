"""Shared fixtures and helpers: a tiny text tokenizer with a small media layout, its Vocab,
a tiny untrained run directory, the tiny toyworld, and one torch thread for tiny models."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from mio.config import load
from mio.model import ModelConfig, build_model
from mio.tokenizers.image import EmbeddedImageTokenizer, ImageTokenizerConfig
from mio.tokenizers.speech import EmbeddedSpeechTokenizer, SpeechTokenizerConfig
from mio.tokenizers.text import build_text_tokenizer
from mio.toyworld import build
from mio.toyworld.world import WorldConfig
from mio.vocab import Vocab, VocabLayout

CORPUS = [
    "a red circle on the left of a blue square",
    "the green triangle is big. Transcribe this speech: hello world",
    "Please generate an image of a small yellow star",
    "user assistant system what colour is the shape? 1 2 3 4 5 6 7 8 9 0",
] * 20

TINY_WORLD = Path(__file__).resolve().parents[1] / "configs" / "toyworld" / "tiny.toml"

SMALL_LAYOUT = VocabLayout(image_codebook_size=64, tokens_per_image=8, speech_codebook_size=32, speech_layers=4)


@pytest.fixture(scope="session")
def text_tokenizer():
    return build_text_tokenizer(CORPUS, vocab_size=400, layout=SMALL_LAYOUT)


@pytest.fixture(scope="session")
def vocab(text_tokenizer):
    return Vocab(text_tokenizer, SMALL_LAYOUT)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """The tiny toyworld (`configs/toyworld/tiny.toml`), built once; tests only read it."""
    out = tmp_path_factory.mktemp("world")
    build.build(load(WorldConfig, TINY_WORLD), out)
    return out


@pytest.fixture
def one_thread():
    """Tiny models on a shared CPU run ~10x faster on one thread (no OpenMP oversubscription),
    and one thread sums in one order, so results repeat exactly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_run_dir(directory: Path, text_tokenizer, run_json: bool = True, positions: int = 1024,
                 context_length: int = 400, stage: str | None = None) -> Path:
    """A tiny untrained run directory laid out like `mio train`'s export."""
    model = build_model(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64,
                                    max_position_embeddings=positions, init_std=0.5), len(text_tokenizer))
    model.save_pretrained(directory)
    text_tokenizer.save_pretrained(directory)
    EmbeddedImageTokenizer(ImageTokenizerConfig(
        image_size=32, conv_channels=(8, 16), width=32, heads=2, encoder_layers=1, qformer_layers=1, decoder_layers=1,
        tokens_per_image=SMALL_LAYOUT.tokens_per_image, codebook_size=SMALL_LAYOUT.image_codebook_size,
        codebook_dim=8)).save(directory / "image_tokenizer")
    EmbeddedSpeechTokenizer(SpeechTokenizerConfig(
        frame_rate=25.0, codebook_size=SMALL_LAYOUT.speech_codebook_size, latent_dim=16, channels=32, blocks=1,
        kmeans_iters=2, griffin_lim_iters=4)).save(directory / "speech_tokenizer")
    if run_json:
        config = {"layout": dataclasses.asdict(SMALL_LAYOUT), "context_length": context_length}
        (directory / "run.json").write_text(json.dumps({"config": config} | ({"stage": stage} if stage else {})))
    return directory
