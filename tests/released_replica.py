"""Tiny random-weight replicas of the released MIO-7B-Base / -Instruct directories.

The same file names, formats and state-dict keys as the release, at tiny widths: a Llama
`config.json` with the release's extra keys, the LM as two pickled `pytorch_model-*.bin`
shards with their index, a sentencepiece `tokenizer.model` with the added chat and media
tokens in `tokenizer_config.json`, `seed-tokenizer-2/`, `stable-diffusion-2-1-unclip/` and
`SpeechTokenizer/`. Used by the tests; nothing here is downloaded.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

CHAT_TOKENS = ["<|im_start|>", "<|im_end|>", "<|im_sep|>"]
"""Yi's sentencepiece model holds the chat markers itself (ids 3-5 here, 6-8 in Yi)."""
MEDIA_SPECIALS = ["<image>", "</image>", "<spch>", "</spch>"]
SPEECH_CONFIG = {  # the keys of the released SpeechTokenizer config.json, with tiny sizes
    "n_filters": 4, "strides": [8, 4, 2], "dimension": 16, "semantic_dimension": 8, "bidirectional": True,
    "dilation_base": 2, "residual_kernel_size": 3, "n_residual_layers": 1, "lstm_layers": 1, "activation": "ELU",
    "sample_rate": 16000, "codebook_size": 32, "n_q": 8,
}
SPEECH_LAYERS = 4
TEXT = [
    "a red circle on the left of a blue square. What is in this picture? The answer is two.",
    "You are MIO, an AI assistant capable of understanding and generating images, text, videos, and speech.",
    "Please respond to the user with speech only, starting with <spch> and ending with </spch>.",
    "Transcribe this speech: hello world. The caption of this image is: a small yellow star.",
]


def write_sentencepiece_tokenizer(directory: Path, image_codes: int, speech_codes: int, vocab_size: int = 400) -> int:
    """A sentencepiece BPE `tokenizer.model` holding the chat markers, plus the release's added
    media tokens (specials, `<img{i}>`, `<spch{i}>`) in `tokenizer_config.json`; returns the
    vocabulary size."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT * 4), model_writer=model, vocab_size=vocab_size, model_type="bpe",
        bos_piece="<|startoftext|>", eos_piece="<|endoftext|>", unk_piece="<unk>", pad_id=-1, byte_fallback=True,
        character_coverage=1.0, user_defined_symbols=CHAT_TOKENS, minloglevel=2)
    (directory / "tokenizer.model").write_bytes(model.getvalue())
    added = MEDIA_SPECIALS + [f"<img{i}>" for i in range(image_codes)] + [f"<spch{i}>" for i in range(speech_codes)]
    specials = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<unk>", "pad_token": "<unk>"}
    config = {
        "tokenizer_class": "LlamaTokenizer", "add_bos_token": False, "add_eos_token": False, "legacy": True,
        "model_max_length": 4096, **specials,
        "added_tokens_decoder": {str(vocab_size + i): {"content": t, "special": True, "lstrip": False, "rstrip": False,
                                                       "normalized": False, "single_word": False}
                                 for i, t in enumerate(added)},
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    (directory / "special_tokens_map.json").write_text(json.dumps(specials))
    return vocab_size + len(added)


def write_lm(directory: Path, vocab_size: int, image_bos_id: int, image_eos_id: int, new_tokens: int,
             eos_id: int, seed: int = 0) -> None:
    """A tiny Llama in the release's format: config.json with its extra keys, two pickled shards."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         tie_word_embeddings=False, bos_token_id=1, eos_token_id=eos_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    for p in model.parameters():
        p.data.normal_(0.0, 0.5)
    state = model.state_dict()
    names = sorted(state)
    shards = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map = {}
    for k, keys in enumerate(shards, 1):
        file = f"pytorch_model-{k:05d}-of-{len(shards):05d}.bin"
        torch.save({n: state[n].clone() for n in keys}, directory / file)
        weight_map |= dict.fromkeys(keys, file)
    total = sum(t.numel() * t.element_size() for t in state.values())
    (directory / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    meta = config.to_dict() | {"architectures": ["LlamaForCausalLM"], "image_bos_id": image_bos_id,
                               "image_eos_id": image_eos_id, "num_new_special_tokens": new_tokens}
    (directory / "config.json").write_text(json.dumps(meta, indent=1))
    (directory / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": eos_id}))


def write_speech_tokenizer(directory: Path, seed: int = 0) -> None:
    """`SpeechTokenizer/`: the released config.json and a pickled state_dict."""
    from mio.tokenizers.speechtokenizer_adapter import speechtokenizer_model_class

    directory.mkdir(parents=True)
    torch.manual_seed(seed)
    (directory / "config.json").write_text(json.dumps(SPEECH_CONFIG))
    torch.save(speechtokenizer_model_class()(SPEECH_CONFIG).state_dict(), directory / "SpeechTokenizer.pt")


def write_released_replica(directory: Path, with_decoder: bool = True, seed: int = 0) -> Path:
    """The whole released layout at tiny widths under `directory` (Base and Instruct share it)."""
    from mio.tokenizers.seed_tokenizer import SeedImageTokenizer, write_tiny_replica

    directory.mkdir(parents=True, exist_ok=True)
    seed_dir = directory / "seed-tokenizer-2"
    write_tiny_replica(seed_dir, seed=seed)
    seed_tokenizer = SeedImageTokenizer.load(seed_dir)
    codebook = seed_tokenizer.codebook_size
    if with_decoder:
        from mio.tokenizers.unclip_decoder import write_tiny_unclip

        write_tiny_unclip(directory / "stable-diffusion-2-1-unclip", embed_dim=seed_tokenizer.image_features_dim, seed=seed)
    write_speech_tokenizer(directory / "SpeechTokenizer", seed=seed)
    speech = SPEECH_LAYERS * SPEECH_CONFIG["codebook_size"]
    size = write_sentencepiece_tokenizer(directory, codebook, speech)
    text_size = size - len(MEDIA_SPECIALS) - codebook - speech
    im_end = 4  # after <unk>, <|startoftext|>, <|endoftext|>, <|im_start|>
    write_lm(directory, size, image_bos_id=text_size, image_eos_id=text_size + 1,
             new_tokens=len(MEDIA_SPECIALS) + codebook + speech, eos_id=im_end, seed=seed)
    return directory
