"""Property-based fuzzing of the boundaries a user or a model can reach: id streams (what an
unconstrained checkpoint can emit), decoding options and messages. Every input gives the
right result or a ValueError naming the problem; never another exception."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mio.generate import DecodingConfig
from mio.model import ModelConfig, build_model
from mio.segments import Image, Malformed, Speech, Text, Video
from mio.vocab import StreamParser

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _merge_text(segments: list) -> list:
    out = []
    for s in segments:
        if isinstance(s, Text) and out and isinstance(out[-1], Text):
            out[-1] = Text(out[-1].text + s.text)
        else:
            out.append(s)
    return out


def _key(segment) -> tuple:
    """A comparable form of a segment."""
    if isinstance(segment, Text):
        return ("text", segment.text)
    if isinstance(segment, Image):
        return ("image", tuple(segment.codes.tolist()))
    if isinstance(segment, Video):
        return ("video", tuple(_key(f) for f in segment.frames))
    if isinstance(segment, Speech):
        return ("speech", tuple(map(tuple, segment.codes.tolist())))
    assert isinstance(segment, Malformed), segment
    return ("malformed", segment.modality, segment.reason, tuple(segment.ids))


def _structured_ids(vocab):
    """Id streams made of the pieces a model writes: text, markers, media codes of every
    layer, whole well-formed blocks, and blocks cut short or run long."""
    lo, hi = vocab.image_range
    slo, shi = vocab.speech_range
    n, size = vocab.layout.tokens_per_image, vocab.layout.speech_codebook_size
    text = st.lists(st.integers(0, lo - 1).filter(lambda i: i not in vocab_markers(vocab)), min_size=1, max_size=4)
    markers = st.lists(st.sampled_from(sorted(vocab_markers(vocab))), min_size=1, max_size=2)
    image_codes = st.lists(st.integers(lo, hi - 1), min_size=0, max_size=n + 2)
    speech_codes = st.lists(st.integers(slo, shi - 1), min_size=0, max_size=6)
    good_image = st.lists(st.integers(lo, hi - 1), min_size=n, max_size=n).map(
        lambda c: [vocab.image_start, *c, vocab.image_end])
    good_speech = st.integers(1, 3).flatmap(lambda t: st.lists(
        st.lists(st.integers(0, size - 1), min_size=t, max_size=t), min_size=4, max_size=4)).map(
        lambda rows: vocab.speech_ids(rows, timbre=True))
    piece = st.one_of(text, markers, image_codes, speech_codes, good_image, good_speech)
    return st.lists(piece, max_size=12).map(lambda pieces: [i for p in pieces for i in p])


def vocab_markers(vocab) -> set[int]:
    return {vocab.image_start, vocab.image_end, vocab.speech_start, vocab.speech_end}


@pytest.mark.parametrize("video", [False, True])
def test_streaming_parse_equals_parse_on_any_id_stream(vocab, video):
    @FUZZ
    @given(ids=_structured_ids(vocab))
    def check(ids):
        whole = vocab.parse(ids, video=video)
        parser = StreamParser(vocab, video=video)
        streamed = [s for t in ids for s in parser.feed(t)] + parser.close()
        assert [_key(s) for s in _merge_text(streamed)] == [_key(s) for s in _merge_text(whole)]
        for s in whole:  # whatever is not Malformed is well-formed media
            if isinstance(s, Image):
                assert s.codes.shape == (vocab.layout.tokens_per_image,)
            if isinstance(s, Speech):
                assert s.codes.dim() == 2 and s.codes.shape[1] > 0

    check()


@FUZZ
@given(option=st.sampled_from(["temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens",
                               "guidance_scale", "num_beams", "do_sample"]),
       value=st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.text(max_size=3),
                       st.floats(allow_nan=True, allow_infinity=True), st.just([1])))
def test_decoding_options_are_valid_or_named(option, value):
    try:
        DecodingConfig().override(**{option: value}).validate()
    except ValueError as e:
        assert option in str(e)
        return
    # accepted: a value a sampler can use
    if isinstance(value, float):
        assert math.isfinite(value)
    assert not isinstance(value, (str, list, type(None)))


def test_fuzzed_chats_never_raise_anything_but_value_errors(vocab):
    from mio.api import MIO

    model = build_model(ModelConfig(hidden_size=16, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=32),
                        vocab.size)
    mio = MIO(model, vocab)  # no media tokenizers: a picture or a sound is a ValueError
    part = st.one_of(st.text(max_size=5), st.none(), st.integers(), st.dictionaries(
        st.sampled_from(["type", "text", "image_url", "input_audio"]),
        st.one_of(st.text(max_size=8), st.none(), st.dictionaries(st.sampled_from(["url", "data", "format"]),
                                                                  st.text(max_size=12)))))
    message = st.one_of(st.dictionaries(st.sampled_from(["role", "content", "name"]),
                                        st.one_of(st.sampled_from(["user", "assistant", "system", "bot"]),
                                                  st.lists(part, max_size=3), part)),
                        part)
    messages = st.one_of(st.lists(message, max_size=3), message)

    @FUZZ
    @given(messages=messages)
    def check(messages):
        try:
            mio.chat_prompt(messages)
        except ValueError:
            pass

    check()


def test_the_fuzz_report_finds_no_traceback_corruption_or_hang():
    from fuzz_report import run

    report = run(cases=40, timeout=20.0, seed=1)
    assert set(report["total"]) <= {"handled", "clear_error"}, report["examples"]
    assert report["total"]["handled"] > 0 and report["total"]["clear_error"] > 0
    assert {"id_stream", "media", "run_dir", "cli"} <= set(report["counts"])
    assert sum(report["counts"]["cli"].values()) == 40
