import json
import random

import pytest
import torch

from mio.cli.main import main
from mio.eval.bench_train import MIX, document_length, synthetic_corpus


def test_bench_train_tiny_writes_the_design_keys(tmp_path):
    path = tmp_path / "bench.json"
    # One thread: this checks the output, not speed, and a shared CPU makes OpenMP spin.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["bench", "train", "--preset", "tiny", "--steps", "2", "--peak-tflops", "0.5", "--json", str(path)]) == 0
    finally:
        torch.set_num_threads(threads)
    out = json.loads(path.read_text())
    keys = {
        "packed_tokens_per_s", "padded_tokens_per_s", "ratio", "packed_pad_fraction", "padded_pad_fraction", "model", "device",
        "document_attention_s_per_step", "explicit_mask_s_per_step", "causal_attention_s_per_step", "document_vs_causal",
    }
    assert keys <= out.keys()
    for key in keys - {"model", "device"}:
        assert isinstance(out[key], float) and out[key] >= 0
    assert out["packed_tokens_per_s"] > 0 and out["padded_tokens_per_s"] > 0
    assert isinstance(out["model"], str) and out["model"]
    assert out["device"] in ("cpu", "cuda")
    assert 0.0 <= out["packed_pad_fraction"] < out["padded_pad_fraction"] <= 1.0
    # the packed method is the document-attention one; the ratio is of the two step times
    assert out["document_attention_s_per_step"] > 0 and out["explicit_mask_s_per_step"] > 0
    assert out["document_vs_causal"] == pytest.approx(out["document_attention_s_per_step"] / out["causal_attention_s_per_step"])
    # model FLOP/s and MFU follow from the packed throughput, the FLOPs per token and the given peak
    assert out["precision"] == "fp32" and out["peak_tflops"] == 0.5
    assert out["packed_model_tflops"] == pytest.approx(out["packed_tokens_per_s"] * out["training_flops_per_token"] / 1e12)
    assert out["mfu"] == pytest.approx(out["packed_model_tflops"] / 0.5)


def test_training_flops_per_token_counts_every_matmul_and_causal_attention():
    from mio.eval.bench_train import PRESETS, training_flops_per_token
    from mio.model import build_model

    preset = PRESETS["tiny"]
    cfg = preset.model
    model = build_model(cfg, preset.vocab_size)
    d, f, layers, v = cfg.hidden_size, cfg.intermediate_size, cfg.num_layers, preset.vocab_size
    kv = d // cfg.num_heads * cfg.num_kv_heads
    per_layer = d * d + 2 * d * kv + d * d + 3 * d * f  # q, k and v, o, gate, up and down
    matmul = layers * per_layer + v * d  # + the LM head (no biases in Llama)
    assert training_flops_per_token(model, 512) == 6 * matmul + 6 * layers * d * 512


def test_mfu_is_not_reported_without_a_peak(one_thread):
    from mio.eval.bench_train import benchmark

    out = benchmark("tiny", steps=1)
    assert out["mfu"] is None and out["peak_tflops"] is None and out["packed_model_tflops"] > 0
    with pytest.raises(ValueError, match="precision must be"):
        benchmark("tiny", steps=1, precision="fp8")


def test_synthetic_corpus_is_deterministic_and_within_the_vocab():
    a, b = synthetic_corpus(3, 100), synthetic_corpus(3, 100)
    docs = [next(a) for _ in range(50)]
    assert [d.ids for d in docs] == [next(b).ids for _ in range(50)]
    assert all(0 <= i < 100 for d in docs for i in d.ids)


def test_document_lengths_follow_the_documented_ranges():

    rng = random.Random(0)
    for _ in range(200):
        lengths = {kind: document_length(kind, rng) for kind in MIX}
        assert 56 <= lengths["image_text_pair"] <= 76
        assert 100 <= lengths["language"] <= 600
        assert 4 * 34 + 22 <= lengths["video_text_pair"] <= 8 * 34 + 72
        assert 2 * 25 <= lengths["asr"] <= 15 * 50 + 45 + 12
        assert 2 * 200 <= lengths["tts"] <= 15 * 200 + 45 + 12
