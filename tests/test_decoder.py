"""The decode path: the slot KV cache against transformers' forward, and continuous batching.

`Decoder` runs the Llama's weights with its own loop over a preallocated cache; it must give
transformers' logits whatever mix of slots, lengths and joins a step has. `Engine` lets
sequences join and leave between steps; each must decode exactly as it would alone.
"""

from __future__ import annotations

import pytest
import torch

from mio.decoder import MIN_SHARED_PREFIX, Decoder, Recompute, check_model, head_logits
from mio.generate import DecodingConfig, Engine, GenerationError, GenerationRequest, allowed_spans, generate
from mio.model import ModelConfig, build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def llama(vocab_size: int = 300, kv_heads: int = 2, seed: int = 0):
    cfg = ModelConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=kv_heads, intermediate_size=96,
                      init_std=0.3, seed=seed)
    return build_model(cfg, vocab_size).eval()


def hf_last_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1].float()


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_slots_joining_and_leaving_give_transformers_logits(kv_heads):
    model = llama(kv_heads=kv_heads)
    decoder = Decoder(model, slots=4, capacity=40)
    sequences = {0: [1, 5, 7, 9, 11], 2: [2, 3], 3: [4] * 9}
    with torch.inference_mode():
        slots = sorted(sequences)
        hidden = dict(zip(slots, decoder.prefill(slots, [sequences[s] for s in slots])))  # one right-padded forward
        for s, ids in sequences.items():
            torch.testing.assert_close(head_logits(model, hidden[s][None])[0], hf_last_logits(model, ids),
                                       atol=1e-4, rtol=1e-4)
        for step in range(6):
            if step == 2:  # a sequence joins slot 1 mid-way; slot 2 leaves
                sequences[1] = [8, 8, 6]
                decoder.prefill([1], [sequences[1]])
                decoder.free(2)
                del sequences[2]
            slots = sorted(sequences)  # 0, 2, 3 (not contiguous), then 0, 1, 3
            tokens = [(7 * step + s) % 300 for s in slots]
            for s, t in zip(slots, tokens):
                sequences[s].append(t)
            out = decoder.step(torch.tensor(slots), torch.tensor(tokens))
            for row, s in enumerate(slots):
                torch.testing.assert_close(head_logits(model, out[row][None])[0], hf_last_logits(model, sequences[s]),
                                           atol=1e-4, rtol=1e-4)
        assert [decoder.length(s) for s in range(4)] == [len(sequences.get(s, [])) for s in range(4)]


def test_reorder_copies_slots_and_prefill_needs_empty_slots():
    model = llama()
    decoder, reference = Decoder(model, slots=3, capacity=30), Recompute(model, slots=3, pad_id=0)
    with torch.inference_mode():
        for d in (decoder, reference):
            d.prefill([0, 1], [[3, 4, 5, 6, 7], [9]])
            d.reorder(torch.tensor([1, 0, 0]))  # slot 0 <- 1, slots 1 and 2 <- 0
        assert [decoder.length(s) for s in range(3)] == [1, 5, 5]
        a = decoder.step(torch.tensor([0, 1, 2]), torch.tensor([10, 11, 12]))
        b = reference.step(torch.tensor([0, 1, 2]), torch.tensor([10, 11, 12]))
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
        with pytest.raises(ValueError, match="still in use"):
            decoder.prefill([0], [[1, 2]])


def test_the_head_on_spans_equals_the_full_head_there():
    model = llama()
    hidden = torch.randn(3, 64)
    with torch.inference_mode():
        full, part = head_logits(model, hidden), head_logits(model, hidden, [(0, 10), (100, 164)])
    torch.testing.assert_close(part[:, :10], full[:, :10])
    torch.testing.assert_close(part[:, 100:164], full[:, 100:164])
    assert torch.isinf(part[:, 10:100]).all() and torch.isinf(part[:, 164:]).all()
    mask = torch.zeros(300, dtype=torch.bool)
    mask[[2, 5, 40, 200, 201]] = True
    assert allowed_spans(mask) == [(2, 41), (200, 202)]
    assert allowed_spans(torch.zeros(300, dtype=torch.bool)) == []


def test_capacity_and_architecture_are_checked():
    model = llama()
    decoder = Decoder(model, slots=1, capacity=8)
    with pytest.raises(ValueError, match="do not fit"):
        decoder.prefill([0], [list(range(9))])

    class NotLlama:
        config = type("C", (), {"model_type": "gpt2"})()

    with pytest.raises(ValueError, match="Llama-architecture"):
        check_model(NotLlama())


def test_a_sequence_that_joins_a_running_batch_decodes_as_it_would_alone(vocab):
    model = build_model(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64,
                                    init_std=0.5, seed=3), len(vocab.tokenizer)).eval()
    sampled = DecodingConfig(max_new_tokens=30).override(do_sample=True, temperature=1.0, top_p=0.9)
    prompts = [[vocab.bos_id, 40, 41, 42], [vocab.bos_id, 50], [vocab.bos_id, 60, 61, 62, 63, 64]]
    stops = (vocab.im_end, vocab.eos_id)

    def alone(i: int) -> list[int]:
        req = GenerationRequest(prompts=[prompts[i]], decoding=sampled, stop_ids=stops, seed=100 + i)
        return generate(model, vocab, req)[0]

    engine = Engine(model, vocab, slots=2, capacity=64)
    rows, replies, step = {}, {}, 0
    waiting = [0, 1, 2]
    while waiting or engine.rows:
        # One sequence joins every third step while a slot is free: later ones join a running batch.
        if waiting and step % 3 == 0 and engine.free_slots:
            i = waiting.pop(0)
            (rows[i],) = engine.add([GenerationRequest(prompts=[prompts[i]], decoding=sampled, stop_ids=stops,
                                                       seed=100 + i)])[0]
            replies[i] = []
        for row, token in engine.step():
            if token is not None:
                replies[next(i for i, r in rows.items() if r is row)].append(token)
        step += 1
    assert replies == {i: alone(i) for i in range(3)}
    assert {r.finish_reason for r in rows.values()} <= {"stop", "length"}
    assert sorted(engine.free_slots) == [0, 1]


def test_a_removed_sequence_frees_its_slot_and_a_full_engine_refuses(vocab):
    model = build_model(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64,
                                    seed=1), len(vocab.tokenizer)).eval()
    engine = Engine(model, vocab, slots=3, capacity=64)

    def req(*ids: int, **kw) -> GenerationRequest:
        return GenerationRequest(prompts=[[vocab.bos_id, *ids]], decoding=DecodingConfig.greedy(max_new_tokens=20), **kw)

    (a,), (b,) = engine.add([req(7), req(8, 8, 8)])  # two requests, one prefill
    with pytest.raises(GenerationError, match="2 cache slots needed, 1 free"):
        engine.add([req(9), req(10)])
    assert engine.free_slots == [2]  # a refused batch takes nothing
    engine.step()
    engine.remove(a)
    assert a.finish_reason == "cancelled" and engine.free_slots == [a.slot, 2]
    engine.add([req(9)])
    with pytest.raises(GenerationError, match="do not fit"):
        Engine(model, vocab, slots=1, capacity=8).add([req(1, 2, 3)])


def test_a_shared_prompt_prefix_is_computed_once_and_reused():
    model = llama()
    decoder = Decoder(model, slots=4, capacity=80)
    system = [(7 * i) % 290 + 1 for i in range(MIN_SHARED_PREFIX + 4)]  # a "system prompt" every chat begins with
    prompts = [system + [11, 12], system + [21], system + [31, 32, 33], system[:3] + [40]]
    with torch.inference_mode():
        decoder.prefill([0, 1], prompts[:2])  # the second shares the first's beginning: remembered
        assert decoder.prefixes.reused_tokens == 0 and len(decoder.prefixes.stored) == 1
        hidden = decoder.prefill([2, 3], prompts[2:])  # the third copies it; the fourth shares too little
        assert decoder.prefixes.reused_tokens == len(system)
        for row, ids in enumerate(prompts[2:]):
            torch.testing.assert_close(head_logits(model, hidden[row][None])[0], hf_last_logits(model, ids),
                                       atol=1e-4, rtol=1e-4)
        out = decoder.step(torch.tensor([2]), torch.tensor([5]))  # and decoding goes on from the copied prefix
        torch.testing.assert_close(head_logits(model, out)[0], hf_last_logits(model, prompts[2] + [5]),
                                   atol=1e-4, rtol=1e-4)
