"""The backbone: random init from a config, or a local pretrained LM extended with media rows."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from mio.cli.main import main
from mio.model import ModelConfig, build_model, extend_vocab
from mio.tokenizers.text import load_text_tokenizer
from mio.vocab import Vocab, VocabLayout

TINY = ModelConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)


def test_pretrained_directory_is_extended_with_media_rows(tmp_path):
    base = build_model(TINY, vocab_size=300)
    base.save_pretrained(tmp_path / "base")
    assert (tmp_path / "base" / "model.safetensors").is_file()
    model = build_model(ModelConfig(init_from=str(tmp_path / "base")), vocab_size=300 + 12292)
    emb = model.get_input_embeddings().weight
    assert emb.shape[0] == 300 + 12292 and model.lm_head.weight.shape[0] == 300 + 12292
    assert torch.equal(emb[:300], base.get_input_embeddings().weight)
    # mean resizing: new rows are centred on the old mean, not zeros or N(0, 0.02)
    old_mean = base.get_input_embeddings().weight.mean(0)
    assert (emb[300:].mean(0) - old_mean).abs().max() < 0.01
    model.save_pretrained(tmp_path / "extended")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "extended")
    assert torch.equal(again.get_input_embeddings().weight, emb)


def test_shrinking_is_refused():
    with pytest.raises(ValueError, match="already has 300 rows"):
        extend_vocab(build_model(TINY, vocab_size=300), 200)


def test_missing_pretrained_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="init_from"):
        build_model(ModelConfig(init_from=str(tmp_path / "nope")), 100)


def test_text_tokenizer_command_trains_or_extends(tmp_path, text_tokenizer):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        "\n".join(json.dumps({"type": "language", "segments": [{"text": f"a red circle number {i}"}]}) for i in range(30))
    )
    layout = "[layout]\nimage_codebook_size = 16\ntokens_per_image = 4\nspeech_codebook_size = 8\n"
    cfg = tmp_path / "text.toml"
    cfg.write_text(f'out_dir = "{tmp_path / "tok"}"\nmanifests = ["{manifest}"]\nvocab_size = 320\n{layout}')
    assert main(["tokenizer", "train", "text", str(cfg)]) == 0
    vocab = Vocab(load_text_tokenizer(tmp_path / "tok"), VocabLayout(16, 4, 8, 4))
    assert vocab.decode_text(vocab.encode_text("a red circle")) == "a red circle"
    # extending a pretrained tokenizer (here: one without media tokens) keeps its text ids
    from mio.tokenizers.text import train_bpe

    plain = train_bpe(["hello world"] * 10, 300)
    plain.save_pretrained(tmp_path / "plain")
    cfg2 = tmp_path / "ext.toml"
    cfg2.write_text(f'out_dir = "{tmp_path / "ext"}"\nbase = "{tmp_path / "plain"}"\n{layout}')
    assert main(["tokenizer", "train", "text", str(cfg2)]) == 0
    extended = load_text_tokenizer(tmp_path / "ext")
    assert extended("hello world")["input_ids"] == plain("hello world")["input_ids"]
    assert len(extended) == len(plain) + VocabLayout(16, 4, 8, 4).num_added
    bad = tmp_path / "bad.toml"
    bad.write_text('out_dir = "x"\n')
    assert main(["tokenizer", "train", "text", str(bad)]) == 2


def test_token_losses_run_the_head_only_where_labels_are_and_match_full_logits():
    from mio.data.packing import IGNORE, PackedBatch
    from mio.model import forward_logits, token_losses

    model = build_model(TINY, vocab_size=50)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 50, (2, 24), generator=g)
    labels = torch.full_like(ids, IGNORE)
    labels[0, 5:9] = ids[0, 6:10]  # SFT-like: a few answer tokens per row, at different places
    labels[1, 15:20] = ids[1, 16:21]
    docs = torch.tensor([[0] * 12 + [1] * 12, [0] * 20 + [-1] * 4])
    positions = torch.cat([torch.arange(12), torch.arange(12)]).expand(2, -1).clone()
    batch = PackedBatch(ids, labels, positions, docs, torch.zeros_like(ids), ["sft"])
    full = forward_logits(model, batch)
    reference = torch.nn.functional.cross_entropy(full.flatten(0, 1), labels.flatten(), ignore_index=IGNORE,
                                                  reduction="none").view_as(labels)
    losses = token_losses(model, batch)
    torch.testing.assert_close(losses, reference)
    assert (losses[labels == IGNORE] == 0).all() and (losses[labels != IGNORE] > 0).all()
    # gradients flow through the kept positions only, and a batch without labels still backpropagates
    losses.sum().backward()
    assert model.lm_head.weight.grad.abs().sum() > 0
    empty = PackedBatch(ids, torch.full_like(ids, IGNORE), positions, docs, torch.zeros_like(ids), ["sft"])
    none = token_losses(model, empty)
    assert (none == 0).all()
    none.sum().backward()
