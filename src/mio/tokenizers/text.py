"""The text tokenizer: a byte-level BPE trained on a corpus, or a pretrained one from disk,
extended with MIO's chat and media tokens.

Media tokens are appended after all text tokens, in `VocabLayout.media_tokens()` order, so
each media range is contiguous. They are added as *special* tokens: `Vocab.encode_text`
then turns off special-token parsing, which is what keeps typed `<img5>` text.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from mio.vocab import IM_END, IM_START, VocabLayout

log = logging.getLogger(__name__)

EOS = "<|endoftext|>"
CHAT_SPECIALS = (EOS, IM_START, IM_END)


def train_bpe(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE over `texts` with the chat specials; no media tokens yet."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(CHAT_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS)


def add_media_tokens(tokenizer, layout: VocabLayout) -> int:
    """Append MIO's chat specials (if missing) and media tokens; returns how many were added."""
    missing_chat = [t for t in (IM_START, IM_END) if t not in tokenizer.get_vocab()]
    added = tokenizer.add_tokens(missing_chat, special_tokens=True) if missing_chat else 0
    media = [t for t in layout.media_tokens() if t not in tokenizer.get_vocab()]
    added += tokenizer.add_tokens(media, special_tokens=True)
    log.info("added %d tokens to the text tokenizer (vocabulary now %d)", added, len(tokenizer))
    return added


def build_text_tokenizer(texts: Iterable[str], vocab_size: int, layout: VocabLayout) -> PreTrainedTokenizerFast:
    """Train a BPE on `texts` and extend it with the media tokens of `layout`."""
    tok = train_bpe(texts, vocab_size)
    add_media_tokens(tok, layout)
    return tok


# Files `save_pretrained` writes; a released checkpoint has at least one of them.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def load_text_tokenizer(path: str | Path):
    """Load a tokenizer directory saved with `save_pretrained` (ours or a released one)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"text tokenizer directory not found: {path}")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(f"{path} has no text tokenizer (none of {', '.join(TOKENIZER_FILES)})")
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception as e:  # tokenizers, sentencepiece and json each raise their own kinds
        raise ValueError(f"{path}: cannot load the text tokenizer ({type(e).__name__}: {e})") from None
