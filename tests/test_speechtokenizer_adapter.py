"""The SpeechTokenizer adapter on a tiny random-weight replica in the released layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("einops")
from mio.tokenizers.base import SpeechTokenizer, load_tokenizer  # noqa: E402
from mio.tokenizers.speechtokenizer_adapter import SpeechTokenizerAdapter, speechtokenizer_model_class  # noqa: E402

TINY_CONFIG = {  # the keys of the released config.json, with tiny sizes
    "n_filters": 4,
    "strides": [8, 4, 2],
    "dimension": 16,
    "semantic_dimension": 8,
    "bidirectional": True,
    "dilation_base": 2,
    "residual_kernel_size": 3,
    "n_residual_layers": 1,
    "lstm_layers": 1,
    "activation": "ELU",
    "sample_rate": 16000,
    "codebook_size": 32,
    "n_q": 8,
}


@pytest.fixture(scope="module")
def replica_dir(tmp_path_factory):
    try:
        model_cls = speechtokenizer_model_class()
    except ImportError as e:
        pytest.skip(str(e))
    torch.manual_seed(0)
    model = model_cls(TINY_CONFIG)
    directory = tmp_path_factory.mktemp("SpeechTokenizer")
    (directory / "config.json").write_text(json.dumps(TINY_CONFIG))
    torch.save(model.state_dict(), directory / "SpeechTokenizer.pt")
    return directory


def _tone(seconds=0.2, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_load_encode_decode(replica_dir):
    tok = load_tokenizer(replica_dir)  # recognised without a "type" key
    assert isinstance(tok, SpeechTokenizerAdapter) and isinstance(tok, SpeechTokenizer)
    assert tok.codebook_size == 32 and tok.frame_rate == 16000 / 64 and tok.sample_rate == 16000
    codes = tok.encode(_tone(), 16000)
    assert codes.dtype == torch.long and codes.shape == (4, 50)
    assert codes.min() >= 0 and codes.max() < 32
    wave, rate = tok.decode(codes)
    assert rate == 16000 and wave.dim() == 1 and wave.shape[0] == 50 * 64
    # stereo 48 kHz input is downmixed and resampled to the same frame count
    stereo = np.stack([_tone(rate=48000), _tone(rate=48000)])
    assert tok.encode(stereo, 48000).shape == (4, 50)


def test_save_roundtrip_and_bad_input(replica_dir, tmp_path):
    tok = SpeechTokenizerAdapter.load(replica_dir)
    tok.save(tmp_path / "copy")
    again = SpeechTokenizerAdapter.load(tmp_path / "copy")
    assert torch.equal(tok.encode(_tone(), 16000), again.encode(_tone(), 16000))
    with pytest.raises(ValueError, match="silent"):
        tok.encode(np.zeros(16000, dtype=np.float32), 16000)
    with pytest.raises(ValueError, match="unequal"):
        tok.decode([[1, 2, 3], [1, 2], [1, 2, 3], [1, 2, 3]])
    with pytest.raises(ValueError, match="out of range"):
        tok.decode(torch.full((4, 3), 32))
    with pytest.raises(FileNotFoundError):
        SpeechTokenizerAdapter.load(tmp_path / "missing")
