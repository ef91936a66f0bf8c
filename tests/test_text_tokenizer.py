"""Training the text tokenizer (`mio tokenizer train text`): which text the BPE reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SMALL_LAYOUT
from mio import config as config_lib
from mio.train.text_tokenizer import TextTokenizerConfig, build


def _write(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _sft(index: int, question: str, answer: str) -> dict:
    return {"type": "sft", "id": f"t-{index}", "task": "language", "mode": "std",
            "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


@pytest.fixture
def manifests(tmp_path):
    pretrain = _write(tmp_path / "language.jsonl", [
        {"type": "language", "id": f"l-{i}", "segments": [{"text": "a red circle and a blue square. " * 3}]}
        for i in range(20)])
    first = [_sft(i, "What colour is the quokka?", "quokka") for i in range(3)]
    more = [_sft(i, "zyzzyva zyzzyva wombat?", "zyzzyva") for i in range(3, 60)]
    return pretrain, _write(tmp_path / "short.jsonl", first), _write(tmp_path / "long.jsonl", first + more)


def _cfg(**kw) -> TextTokenizerConfig:
    return TextTokenizerConfig(vocab_size=320, layout=SMALL_LAYOUT, **kw)


def test_a_sampled_manifest_contributes_only_its_first_records(manifests):
    pretrain, short, long = manifests
    sampled_short = build(_cfg(manifests=[pretrain], sampled_manifests=[short], sample_records=3))
    sampled_long = build(_cfg(manifests=[pretrain], sampled_manifests=[long], sample_records=3))
    assert sampled_short.get_vocab() == sampled_long.get_vocab()
    # read whole, the extra records change the merges: the sample is what keeps them fixed
    assert build(_cfg(manifests=[pretrain, long])).get_vocab() != sampled_short.get_vocab()
    # and the sampled records are read: their words are merged
    without = build(_cfg(manifests=[pretrain]))
    word = "What colour is the quokka?"
    assert len(sampled_short(word)["input_ids"]) < len(without(word)["input_ids"])


def test_sample_records_must_be_positive(manifests):
    pretrain, short, _ = manifests
    with pytest.raises(ValueError, match="sample_records"):
        config_lib.load(TextTokenizerConfig, {"manifests": [pretrain], "sampled_manifests": [short],
                                              "sample_records": 0})
