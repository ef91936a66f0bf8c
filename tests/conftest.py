"""Shared fixtures: a tiny text tokenizer with a small media layout, and its Vocab."""

from __future__ import annotations

import pytest

from mio.text_tokenizer import build_text_tokenizer
from mio.vocab import Vocab, VocabLayout

CORPUS = [
    "a red circle on the left of a blue square",
    "the green triangle is big. Transcribe this speech: hello world",
    "Please generate an image of a small yellow star",
    "user assistant system what colour is the shape? 1 2 3 4 5 6 7 8 9 0",
] * 20

SMALL_LAYOUT = VocabLayout(image_codebook_size=64, tokens_per_image=8, speech_codebook_size=32, speech_layers=4)


@pytest.fixture(scope="session")
def text_tokenizer():
    return build_text_tokenizer(CORPUS, vocab_size=400, layout=SMALL_LAYOUT)


@pytest.fixture(scope="session")
def vocab(text_tokenizer):
    return Vocab(text_tokenizer, SMALL_LAYOUT)
