"""The generation engine: well-formed media by construction, KV cache, batching, beams, CFG.

Models are tiny random Llamas; "adversaries" have their LM head replaced by a biased linear
layer that prefers exactly the tokens the grammar forbids (closing a block early, text or
wrong-layer codes inside blocks), so only the constraint keeps their output well-formed.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from mio.generate import (
    DecodingConfig,
    GenerationError,
    GenerationRequest,
    ModalityDecoding,
    _apply_repetition_penalty,
    _filter_top_k_top_p,
    generate,
    stream,
)
from mio.model import ModelConfig, build_model
from mio.segments import Image, Malformed, Speech, Text, Video

pytestmark = pytest.mark.usefixtures("one_thread")

ALL = {"text", "image", "video", "speech"}



def tiny_model(vocab, seed: int = 0):
    cfg = ModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64,
                      init_std=0.5, seed=seed)
    return build_model(cfg, len(vocab.tokenizer)).eval()


def adversary(vocab, kind: str):
    """A tiny model whose logits are dominated by a bias towards forbidden tokens."""
    model = tiny_model(vocab, seed=1)
    hidden, size = model.config.hidden_size, len(vocab.tokenizer)
    head = nn.Linear(hidden, size, bias=True)
    with torch.no_grad():
        head.weight.normal_(0.0, 0.0 if kind == "uniform" else 0.3)
        head.bias.zero_()
        if kind != "uniform":
            head.bias[[vocab.image_start, vocab.speech_start]] = 6.0  # open blocks often
            head.bias[[vocab.im_end, vocab.eos_id]] = 2.0
        if kind == "close":  # end every block at once
            head.bias[[vocab.image_end, vocab.speech_end]] = 12.0
        elif kind == "text":  # write text inside blocks (but open blocks first, text is greedy)
            head.bias[: vocab.image_start] = 8.0
            head.bias[[vocab.image_start, vocab.speech_start]] = 14.0
            head.bias[[vocab.im_end, vocab.eos_id]] = 2.0
        elif kind == "wrong_layer":  # last speech layer and image codes everywhere
            lo, hi = vocab.speech_layer_range(vocab.layout.speech_layers - 1)
            head.bias[lo:hi] = 9.0
            lo, hi = vocab.image_range
            head.bias[lo:hi] = 7.0
    model.lm_head = head
    return model


def prompts(vocab, n: int = 4) -> list[list[int]]:
    words = "a red circle on the left of a blue square".split()
    return [[vocab.bos_id] + vocab.encode_text(" ".join(words[: 1 + i % len(words)])) for i in range(n)]


def request(vocab, **kw) -> GenerationRequest:
    kw.setdefault("prompts", prompts(vocab))
    kw.setdefault("stop_ids", (vocab.im_end, vocab.eos_id))
    return GenerationRequest(**kw)


def check_well_formed(vocab, reply: list[int]) -> list:
    """Parse a reply and assert every media block is exact; returns the segments."""
    segments = vocab.parse(reply, video=True)
    n, size = vocab.layout.tokens_per_image, vocab.layout.image_codebook_size
    for seg in segments:
        assert not isinstance(seg, Malformed), seg
        frames = seg.frames if isinstance(seg, Video) else [seg] if isinstance(seg, Image) else []
        for frame in frames:
            assert frame.codes.shape == (n,) and 0 <= frame.codes.min() and frame.codes.max() < size
        if isinstance(seg, Speech):
            assert seg.codes.shape[0] == vocab.layout.speech_layers and seg.codes.shape[1] >= 1
            assert 0 <= seg.codes.min() and seg.codes.max() < vocab.layout.speech_codebook_size
    return segments


@pytest.mark.parametrize("kind,modalities", [("uniform", {"image", "video", "speech"}), ("close", ALL),
                                              ("text", ALL), ("wrong_layer", ALL)])
def test_every_block_is_well_formed_over_many_seeds(vocab, kind, modalities):
    model = adversary(vocab, kind)
    decoding = DecodingConfig(max_new_tokens=70).override(do_sample=True)  # text sampled too: more variety
    blocks = 0
    for seed in range(10):
        req = request(vocab, output_modalities=frozenset(modalities), decoding=decoding, seed=seed)
        for reply in generate(model, vocab, req):
            blocks += sum(not isinstance(s, Text) for s in check_well_formed(vocab, reply))
    assert blocks >= 40  # the adversaries open many blocks


@pytest.mark.parametrize("kind", ["close", "text", "wrong_layer"])
def test_unconstrained_adversaries_write_malformed_blocks(vocab, kind):
    """The check above is not vacuous: without the constraint each adversary breaks blocks."""
    model = adversary(vocab, kind)
    req = request(vocab, decoding=DecodingConfig(max_new_tokens=40), seed=0, constrain=False)
    replies = generate(model, vocab, req)
    assert any(isinstance(s, Malformed) for r in replies for s in vocab.parse(r))


def test_speech_only_replies_start_with_speech_and_fit_the_budget(vocab):
    model = adversary(vocab, "text")
    for budget in (6, 7, 13, 30):
        for seed in range(3):
            req = request(vocab, output_modalities=frozenset({"speech"}),
                          decoding=DecodingConfig(max_new_tokens=budget), seed=seed)
            for reply in generate(model, vocab, req):
                assert reply[0] == vocab.speech_start and len(reply) <= budget
                assert all(isinstance(s, Speech) for s in check_well_formed(vocab, reply))


def test_too_small_budget_for_any_block_gives_an_empty_reply(vocab):
    req = request(vocab, output_modalities=frozenset({"image"}), decoding=DecodingConfig(max_new_tokens=5), seed=0)
    assert generate(adversary(vocab, "close"), vocab, req) == [[]] * 4


def test_block_cut_by_the_limit_is_reported_malformed(vocab):
    """With fit_to_budget off, a block can be cut off; parse reports it, nothing crashes."""
    cfg = DecodingConfig(max_new_tokens=5, fit_to_budget=False)
    req = request(vocab, output_modalities=frozenset({"image"}), decoding=cfg, seed=0)
    for reply in generate(adversary(vocab, "close"), vocab, req):
        (seg,) = vocab.parse(reply)
        assert isinstance(seg, Malformed) and seg.reason == "block not closed"


def test_video_only_gives_videos_of_at_least_two_frames(vocab):
    req = request(vocab, output_modalities=frozenset({"video"}), decoding=DecodingConfig(max_new_tokens=45), seed=0)
    for reply in generate(adversary(vocab, "close"), vocab, req):
        segments = check_well_formed(vocab, reply)
        assert segments and all(isinstance(s, Video) and len(s.frames) >= 2 for s in segments)


def test_image_without_video_never_puts_two_blocks_back_to_back(vocab):
    req = request(vocab, output_modalities=frozenset({"image", "text"}), decoding=DecodingConfig(max_new_tokens=60),
                  seed=0)
    for reply in generate(adversary(vocab, "close"), vocab, req):
        assert not any(isinstance(s, Video) for s in check_well_formed(vocab, reply))
        assert all(a != vocab.image_end or b != vocab.image_start for a, b in zip(reply, reply[1:]))


def test_content_only_speech_when_allowed(vocab):
    cfg = DecodingConfig(max_new_tokens=30, content_only_speech=True)
    req = request(vocab, output_modalities=frozenset({"speech"}), decoding=cfg, seed=0)
    for reply in generate(adversary(vocab, "close"), vocab, req):
        segments = vocab.parse(reply)
        assert segments and all(isinstance(s, Speech) and s.codes.shape[0] == 1 for s in segments)


def test_text_only_output_has_no_media_tokens(vocab):
    for decoding in (DecodingConfig(max_new_tokens=20), DecodingConfig.greedy(max_new_tokens=20)):  # beams, greedy
        req = request(vocab, output_modalities=frozenset({"text"}), decoding=decoding)
        for reply in generate(adversary(vocab, "wrong_layer"), vocab, req):
            assert all(isinstance(s, Text) for s in vocab.parse(reply))


def test_greedy_with_the_kv_cache_equals_full_recomputation(vocab):
    model = adversary(vocab, "wrong_layer")
    req = request(vocab, decoding=DecodingConfig.greedy(max_new_tokens=40))
    cached = generate(model, vocab, req)
    assert cached == generate(model, vocab, dataclasses.replace(req, use_cache=False))
    assert any(vocab.image_start in r or vocab.speech_start in r for r in cached)


def test_a_batch_gives_the_same_greedy_replies_as_single_calls(vocab):
    model = tiny_model(vocab)
    req = request(vocab, prompts=prompts(vocab, 5), decoding=DecodingConfig.greedy(max_new_tokens=30))
    batched = generate(model, vocab, req)
    assert batched == [generate(model, vocab, dataclasses.replace(req, prompts=[p]))[0] for p in req.prompts]


def test_beam_search_batch_and_cache_agree(vocab):
    model = tiny_model(vocab)
    req = request(vocab, output_modalities=frozenset({"text"}), decoding=DecodingConfig(max_new_tokens=12))
    beams = generate(model, vocab, req)
    assert beams == generate(model, vocab, dataclasses.replace(req, use_cache=False))
    assert beams == [generate(model, vocab, dataclasses.replace(req, prompts=[p]))[0] for p in req.prompts]


def _sequence_logprob(model, prompt: list[int], reply: list[int]) -> float:
    ids = torch.tensor([prompt + reply])
    with torch.no_grad():
        logp = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
    return sum(logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(reply))


def test_beam_search_finds_at_least_the_greedy_likelihood(vocab):
    """With no stop token and a fixed length, the best beam is at least as likely as greedy."""
    model = tiny_model(vocab)
    req = request(vocab, output_modalities=frozenset({"text"}), stop_ids=(), decoding=DecodingConfig(max_new_tokens=8))
    greedy = dataclasses.replace(req, decoding=DecodingConfig.greedy(max_new_tokens=8))
    for p, b, g in zip(req.prompts, generate(model, vocab, req), generate(model, vocab, greedy)):
        assert len(b) == len(g) == 8
        assert _sequence_logprob(model, p, b) >= _sequence_logprob(model, p, g) - 1e-4


def test_guidance_scale_one_equals_no_guidance(vocab):
    model = adversary(vocab, "uniform")
    base = request(vocab, decoding=DecodingConfig(max_new_tokens=40), seed=3)
    uncond = [[vocab.bos_id]] * len(base.prompts)
    guided = dataclasses.replace(base, uncond_prompts=uncond,
                                 decoding=DecodingConfig(max_new_tokens=40, guidance_scale=1.0))
    assert generate(model, vocab, base) == generate(model, vocab, guided)


def test_guidance_is_the_identity_when_both_contexts_match(vocab):
    """cond + s * (cond - cond) = cond: the CFG arithmetic leaves greedy output unchanged."""
    model = adversary(vocab, "wrong_layer")
    base = request(vocab, decoding=DecodingConfig.greedy(max_new_tokens=30))
    same = dataclasses.replace(base, uncond_prompts=base.prompts,
                               decoding=DecodingConfig.greedy(max_new_tokens=30, guidance_scale=3.0))
    assert generate(model, vocab, base) == generate(model, vocab, same)


def test_guidance_changes_media_and_keeps_them_well_formed(vocab):
    model = tiny_model(vocab)
    cfg = DecodingConfig.greedy(max_new_tokens=40)
    base = request(vocab, output_modalities=frozenset({"image", "speech"}), decoding=cfg)
    guided = dataclasses.replace(base, uncond_prompts=[[vocab.bos_id]] * 4,
                                 decoding=dataclasses.replace(cfg, guidance_scale=4.0))
    plain, steered = generate(model, vocab, base), generate(model, vocab, guided)
    assert plain != steered
    for reply in steered:
        check_well_formed(vocab, reply)


def test_sampling_is_reproducible_with_a_seed(vocab):
    model = adversary(vocab, "uniform")
    req = request(vocab, decoding=DecodingConfig(max_new_tokens=30).override(do_sample=True), seed=7)
    first = generate(model, vocab, req)
    assert first == generate(model, vocab, req)
    assert first != generate(model, vocab, dataclasses.replace(req, seed=8))


def test_stream_yields_the_same_tokens_as_generate(vocab):
    model = adversary(vocab, "close")
    req = request(vocab, decoding=DecodingConfig(max_new_tokens=40), seed=1)
    streamed = [[] for _ in req.prompts]
    for step in stream(model, vocab, req):
        for row, token in enumerate(step):
            if token is not None:
                streamed[row].append(token)
    assert streamed == generate(model, vocab, req)


def test_context_limit_clamps_the_reply_and_rejects_a_prompt_that_does_not_fit(vocab):
    model = tiny_model(vocab)
    req = request(vocab, stop_ids=(), decoding=DecodingConfig.greedy(max_new_tokens=50), max_context=20)
    for p, reply in zip(req.prompts, generate(model, vocab, req)):
        assert len(p) + len(reply) == 20
    with pytest.raises(GenerationError, match=r"prompt 0 is 30 tokens long; the model's context is 20"):
        generate(model, vocab, dataclasses.replace(req, prompts=[[vocab.bos_id] * 30]))


def test_bad_settings_are_clear_errors(vocab):
    model = tiny_model(vocab)
    with pytest.raises(GenerationError, match="max_new_tokens must be >= 1"):
        generate(model, vocab, request(vocab, decoding=DecodingConfig(max_new_tokens=0)))
    with pytest.raises(GenerationError, match="needs unconditional prompts"):
        generate(model, vocab, request(vocab, decoding=DecodingConfig(guidance_scale=2.0)))
    with pytest.raises(GenerationError, match="unknown decoding option 'beams'"):
        DecodingConfig().override(beams=3)
    with pytest.raises(GenerationError, match="temperature must be >= 0.001"):
        DecodingConfig(image=ModalityDecoding(temperature=0)).validate()


def test_decoding_defaults_follow_the_paper_and_overrides_apply_to_all_modalities():
    cfg = DecodingConfig()
    assert (cfg.text.num_beams, cfg.text.do_sample, cfg.text.repetition_penalty) == (5, False, 1.0)
    assert (cfg.image.do_sample, cfg.image.top_p, cfg.image.repetition_penalty) == (True, 0.7, 1.0)
    assert (cfg.speech.top_p, cfg.speech.repetition_penalty) == (0.7, 1.15)
    assert (cfg.video.top_p, cfg.video.repetition_penalty) == (0.7, 1.15)
    hot = cfg.override(temperature=0.5, max_new_tokens=9)
    assert hot.max_new_tokens == 9
    assert {hot.section(m).temperature for m in ("text", "image", "video", "speech")} == {0.5}
    assert hot.speech.repetition_penalty == 1.15 and cfg.image.temperature == 1.0


def test_top_k_top_p_filtering_keeps_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.5, 0.3, 0.15, 0.05]]))
    out = _filter_top_k_top_p(logits, torch.tensor([0, 1]), torch.tensor([0.7, 1.0]))
    assert torch.isfinite(out).tolist() == [[True, True, False, False], [True, False, False, False]]


def test_repetition_penalty_is_per_row_and_follows_hf():
    logits = torch.tensor([[2.0, -2.0, 1.0], [2.0, -2.0, 1.0]])
    seen = torch.tensor([[True, True, False], [True, True, False]])
    out = _apply_repetition_penalty(logits, seen, [2.0, 1.0])
    assert out.tolist() == [[1.0, -4.0, 1.0], [2.0, -2.0, 1.0]]
