"""The embedded speech tokenizer: config, training, save/load, encode/decode, bad input, judge."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from mio import config as config_lib
from mio.media.audio import AudioError, load_audio
from mio.tokenizers.base import SpeechTokenizer, load_tokenizer
from mio.tokenizers.speech import EmbeddedSpeechTokenizer, SpeechTokenizerConfig
from mio.toyworld.speech_synth import Voice, synthesize
from mio.train.speech_tokenizer import (
    SpeechTrainConfig,
    ctc_greedy,
    length_bucketed_batches,
    shuffled_timbre_offset,
    text_to_labels,
    train_from_config,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tokenizer"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("speech_tok")
    metrics = train_from_config(CONFIGS / "speech_tiny.toml", out_dir=out)
    return out, metrics


@pytest.fixture(scope="module")
def speech():
    return synthesize("three red circles on the left", Voice("en-us", "f2"))


@pytest.mark.parametrize("name", ["speech_tiny.toml", "speech_default.toml"])
def test_shipped_configs_parse(name):
    cfg = config_lib.load(SpeechTrainConfig, CONFIGS / name)
    assert cfg.model.num_layers == 4 and cfg.model.frame_rate <= 50


def test_config_rejects_bad_frame_rate():
    with pytest.raises(config_lib.ConfigError, match="frame_rate"):
        config_lib.load(SpeechTokenizerConfig, {"frame_rate": 30.0})


def test_training_writes_a_loadable_directory(trained):
    out, metrics = trained
    assert json.loads((out / "config.json").read_text())["type"] == "mio-speech"
    assert (out / "model.safetensors").is_file()
    saved = json.loads((out / "metrics.json").read_text())
    held = saved["heldout"]
    for key in ("mel_l1", "layer1_ctc_cer", "encode_rtf", "decode_rtf", "codebook_usage"):
        assert key in held
    assert set(held["probe_speaker_accuracy"]) == {"layer1", "layers2_4", "chance"}
    assert saved["judge"] == {"skipped": "judge_utterances = 0"}
    assert metrics["train"]["steps"] == 20


def test_encode_decode_roundtrip(trained, speech):
    tok = load_tokenizer(trained[0])
    assert isinstance(tok, EmbeddedSpeechTokenizer) and isinstance(tok, SpeechTokenizer)
    assert (tok.codebook_size, tok.frame_rate, tok.sample_rate) == (16, 25.0, 16000)
    codes = tok.encode(speech, 16000)
    seconds = len(speech) / 16000
    assert codes.dtype == torch.long and codes.shape[0] == 4
    assert abs(codes.shape[1] - seconds * 25) <= 2
    assert codes.min() >= 0 and codes.max() < 16
    wave, rate = tok.decode(codes)
    assert rate == 16000 and wave.dtype == torch.float32 and wave.dim() == 1
    assert abs(len(wave) / rate - codes.shape[1] / 25) < 0.05
    assert torch.isfinite(wave).all() and wave.abs().max() <= 1.0
    again = EmbeddedSpeechTokenizer.load(trained[0])
    assert torch.equal(again.encode(speech, 16000), codes)
    assert torch.equal(tok.decode(codes.tolist())[0], wave)  # lists work too


def test_input_handling(trained, speech):
    tok = load_tokenizer(trained[0])
    codes = tok.encode(speech, 16000)
    stereo = np.stack([speech, speech])
    assert torch.equal(tok.encode(stereo, 16000), codes)  # [channels, N]
    assert torch.equal(tok.encode(stereo.T, 16000), codes)  # [N, channels]
    for rate in (8000, 48000):
        from mio.media.audio import resample

        other = tok.encode(resample(speech, 16000, rate), rate)
        assert abs(other.shape[1] - codes.shape[1]) <= 1
    clipped = np.clip(speech * 20, -1, 1)
    assert tok.encode(clipped, 16000).shape == codes.shape
    assert torch.equal(tok.encode(speech * 0.05, 16000), codes)  # level is normalised


def test_feature_normalisation_roundtrip(trained, speech):
    """The encoder sees per-bin standardised log-mels and the decoder's output is mapped back to
    log-magnitudes with the training statistics, which are saved with the weights."""
    tok = load_tokenizer(trained[0])
    codec = tok.codec
    assert not torch.allclose(codec.mel_std, torch.ones_like(codec.mel_std))  # fitted, saved, loaded
    log_mag, log_mel = codec.features(torch.from_numpy(speech)[None])
    mask = torch.ones(1, log_mag.shape[-1], dtype=torch.bool)
    codec.fit_normalization(log_mag, log_mel, mask)
    normalised = (log_mel - codec.mel_mean[:, None]) / codec.mel_std[:, None]
    torch.testing.assert_close(normalised.mean(-1)[0], torch.zeros(normalised.shape[1]), atol=1e-4, rtol=0)
    varying = log_mel.std(-1)[0] > 1e-2  # bins always at the floor keep std clamped
    torch.testing.assert_close(normalised.std(-1)[0][varying], torch.ones(int(varying.sum())), atol=1e-3, rtol=0)
    # The mean log-mel is what the encoder network sees as all zeros.
    mean_mel = codec.mel_mean[None, :, None].expand(1, -1, 2 * tok.config.downsample)
    torch.testing.assert_close(
        codec.encode_latent(mean_mel), codec.encoder(torch.zeros_like(mean_mel)).transpose(1, 2)
    )
    # The decoder's channel k * F + f is bin f of spectral frame k of its code frame, in
    # standardised units: with output k everywhere, frame t * ds + k is mean + k * std.
    ds, n_freq = tok.config.downsample, log_mag.shape[1]
    last = codec.decoder[-1]
    torch.nn.init.zeros_(last.weight)
    last.bias.data = torch.arange(ds).float().repeat_interleave(n_freq)
    out = codec.decode_log_magnitude(torch.randn(1, 3, tok.config.latent_dim))
    assert out.shape == (1, n_freq, 3 * ds)
    k = torch.arange(ds).repeat(3)
    expected = codec.magnitude_mean[:, None] + k[None] * codec.magnitude_std[:, None]
    torch.testing.assert_close(out[0], expected)


@pytest.mark.parametrize(
    "wave, match",
    [
        (np.zeros(0, dtype=np.float32), "empty"),
        (np.zeros(16000, dtype=np.float32), "silent"),
        (np.full(16000, np.nan, dtype=np.float32), "NaN"),
        (np.random.default_rng(0).uniform(-0.5, 0.5, 16000 * 16).astype(np.float32), "maximum of 15"),
        (np.zeros((2, 3, 4), dtype=np.float32), "shape"),
    ],
)
def test_bad_audio_is_a_clear_error(trained, wave, match):
    tok = load_tokenizer(trained[0])
    with pytest.raises(AudioError, match=match):
        tok.encode(wave, 16000)


def test_bad_codes_are_a_clear_error(trained):
    tok = load_tokenizer(trained[0])
    for codes, match in [
        ([[1, 2, 3], [1, 2], [1, 2, 3], [1, 2, 3]], "unequal"),
        (torch.zeros(3, 5, dtype=torch.long), "shape"),
        (torch.full((4, 5), 16), "out of range"),
        (torch.zeros(4, 0, dtype=torch.long), "empty"),
        (torch.zeros(4, 5), "integers"),
    ]:
        with pytest.raises(ValueError, match=match):
            tok.decode(codes)


def test_load_audio(tmp_path, speech):
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([speech, speech], axis=1), 22050)
    wave, rate = load_audio(path)
    assert rate == 22050 and wave.shape == (2, len(speech))
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioError, match="not a readable audio file"):
        load_audio(junk)
    with pytest.raises(FileNotFoundError):
        load_audio(tmp_path / "missing.wav")


def test_length_bucketed_batches():
    lengths = [random.Random(i).randrange(100, 400) for i in range(100)]
    batches = length_bucketed_batches(lengths, 8, 4, random.Random(0))
    assert len(batches) == 12 and all(len(b) == 8 for b in batches)  # full batches only
    assert len({i for b in batches for i in b}) == 96  # each utterance at most once per epoch
    padded = sum(8 * max(lengths[i] for i in b) for b in batches)
    random_padded = sum(8 * max(lengths[i] for i in b) for b in length_bucketed_batches(lengths, 8, 1, random.Random(0)))
    assert padded < 0.8 * random_padded


def test_ctc_helpers():
    labels = text_to_labels("Red, 2 cats!")
    assert labels == text_to_labels("red cats") [:3] + labels[3:]
    # best path "aa-b" with blanks collapses to "ab"
    a, b = text_to_labels("a")[0], text_to_labels("b")[0]
    log_probs = torch.full((4, 29), -10.0)
    for t, c in enumerate([a, a, 0, b]):
        log_probs[t, c] = 0.0
    assert ctc_greedy(log_probs, 4) == "ab"


def test_wer_normalises():
    judge = pytest.importorskip("mio.judges.speech")
    pytest.importorskip("jiwer")
    pytest.importorskip("whisper_normalizer")
    assert judge.wer(["three red circles"], ["Three red circles."]) == 0.0
    assert judge.wer(["a b c d"], ["a b c"]) == 0.25
    with pytest.raises(ValueError):
        judge.wer(["a"], [])


def test_whisper_judge_caps_a_transcript_by_the_audio_length(monkeypatch):
    """Whisper's repetition loops ("end of end of ...") must not run to its 448-token limit:
    one such utterance made a corpus WER of 1.5 out of 0.5."""
    from mio.judges import speech as speech_judge

    class LoopingWhisper:
        def transcribe(self, audio, max_new_tokens=448, **kwargs):
            return [SimpleNamespace(text=" ".join(["end"] * max_new_tokens))], None

    monkeypatch.setattr(speech_judge, "_model", lambda: LoopingWhisper())
    one_second, three_seconds = speech_judge.transcribe([np.zeros(8000), np.zeros(24000)], 8000)
    assert len(one_second.split()) == speech_judge.max_tokens(1.0) < 30
    assert len(three_seconds.split()) == speech_judge.max_tokens(3.0) < 60


def test_whisper_judge_hears_the_same_audio_once(monkeypatch):
    """Evaluation hears each reference for every checkpoint and baseline: the judge runs once
    per distinct clip, and a different clip of the same length is heard anew."""
    from mio.judges import speech as speech_judge

    class CountingWhisper:
        calls = 0

        def transcribe(self, audio, **kwargs):
            CountingWhisper.calls += 1
            return [SimpleNamespace(text=f"clip {float(audio.sum()):.0f}")], None

    model = CountingWhisper()
    monkeypatch.setattr(speech_judge, "_model", lambda: model)
    ones, twos = np.ones(16000), 2 * np.ones(16000)
    assert speech_judge.transcribe([ones, twos, ones], 16000) == ["clip 16000", "clip 32000", "clip 16000"]
    assert speech_judge.transcribe([twos], 16000) == ["clip 32000"]
    assert CountingWhisper.calls == 2


def test_whisper_judge_transcribes(speech):
    from mio.judges import speech as speech_judge

    if not speech_judge.available():
        pytest.skip(speech_judge.UNAVAILABLE_HINT)
    hyp = speech_judge.transcribe([speech], 16000)
    assert speech_judge.wer(["three red circles on the left"], hyp) <= 0.4


def test_timbre_shuffle_reorders_each_timbre_layer_and_keeps_the_content(trained):
    codec = load_tokenizer(trained[0]).codec
    codes = torch.randint(0, codec.config.codebook_size, (3, 10, codec.config.num_layers))
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[1, 6:] = False  # a shorter utterance: its padding is left alone
    torch.manual_seed(0)
    offset = shuffled_timbre_offset(codec, codes, mask, share=1.0)
    layers = codec.rvq.get_codes_from_indices(codes)  # [layers, B, T, D]
    shuffled = layers.sum(0) + offset
    assert torch.equal(offset[1, 6:], torch.zeros_like(offset[1, 6:]))
    for b, valid in ((0, 10), (1, 6)):
        # Every frame is still the content code plus some timbre frames of the same utterance:
        # each layer's vectors summed over the valid frames are unchanged (a permutation).
        assert torch.allclose(shuffled[b, :valid].sum(0), layers.sum(0)[b, :valid].sum(0), atol=1e-4)
        timbre = shuffled[b, :valid] - layers[0, b, :valid]
        assert not torch.allclose(timbre, layers[1:].sum(0)[b, :valid])
    assert torch.equal(shuffled_timbre_offset(codec, codes, mask, share=0.0), torch.zeros_like(offset))
    with pytest.raises(config_lib.ConfigError, match="timbre_shuffle"):
        config_lib.load(SpeechTrainConfig, {"timbre_shuffle": 1.5})
