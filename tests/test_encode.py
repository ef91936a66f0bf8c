import random

import pytest
import torch

from mio.data.encode import EncodeConfig, Sample, encode_prompt, encode_sample, frames_for_text
from mio.segments import Image, Message, Speech, Text, Video
from mio.templates import render_chat
from mio.vocab import render_image, render_speech

CFG = EncodeConfig(speech_frame_rate=25.0)


def img(seed=0):
    return Image(codes=torch.randint(0, 64, (8,), generator=torch.Generator().manual_seed(seed)))


def speech(t=5):
    return Speech(codes=torch.randint(0, 32, (4, t), generator=torch.Generator().manual_seed(t)))


def strip_bos_eos(vocab, enc):
    s = vocab.to_string(enc.ids)
    return s.removeprefix("<|endoftext|>").removesuffix("<|endoftext|>")


def test_image_text_pair_both_directions_with_appendix_b_templates(vocab):
    sample = Sample("image_text_pair", [img(), Text("a red circle")])
    seen = set()
    for seed in range(40):
        enc = encode_sample(sample, vocab, CFG, random.Random(seed))
        s = strip_bos_eos(vocab, enc)
        block = render_image(img().codes)
        assert s in (
            f"{block} The caption of this image is: a red circle",
            f"Please generate an image of ``a red circle'': {block}",
        )
        seen.add(s.startswith("<image>"))
        assert all(enc.loss[1:]) and not enc.loss[0]
    assert seen == {True, False}


def test_video_pair_ratio_and_frame_rule(vocab):
    frames = [img(i) for i in range(12)]
    short = Sample("video_text_pair", [Video(frames), Text("a ball moves")])
    rng = random.Random(0)
    v2t = 0
    for _ in range(500):
        s = strip_bos_eos(vocab, encode_sample(short, vocab, CFG, rng))
        v2t += s.startswith("Please describe the following video:")
        assert s.count("<image>") == 4
    assert 0.34 < v2t / 500 < 0.46
    long_text = " ".join(["word"] * 40)
    assert frames_for_text(long_text, CFG) == 8
    enc = encode_sample(Sample("video_text_pair", [Video(frames), Text(long_text)]), vocab, CFG, rng)
    assert vocab.to_string(enc.ids).count("<image>") == 8


def test_speech_pair_asr_content_only_tts_four_layers(vocab):
    sp = speech(5)
    sample = Sample("speech_text_pair", [sp, Text("hello world")])
    outs = {strip_bos_eos(vocab, encode_sample(sample, vocab, CFG, random.Random(s))) for s in range(30)}
    assert f"{render_speech(sp.codes, timbre=False, codebook_size=32)} Transcribe this speech: hello world" in outs
    assert f"Please generate a speech of ``hello world'': {render_speech(sp.codes, timbre=True, codebook_size=32)}" in outs
    stage3 = EncodeConfig(speech_frame_rate=25.0, asr_template="asr_stage3", asr_probability=1.0)
    s = strip_bos_eos(vocab, encode_sample(sample, vocab, stage3, random.Random(0)))
    assert "The transcription of this speech is: hello world" in s


def test_speech_over_15_seconds_is_dropped(vocab):
    long = Speech(codes=torch.zeros(4, int(25 * 15.5), dtype=torch.long))
    assert encode_sample(Sample("speech_text_pair", [long, Text("x")]), vocab, CFG, random.Random(0)) is None
    ok = Speech(codes=torch.zeros(4, 25 * 15, dtype=torch.long))
    assert encode_sample(Sample("speech_text_pair", [ok, Text("x")]), vocab, CFG, random.Random(0)) is not None


def test_interleaved_keeps_order(vocab):
    sample = Sample("image_text_interleaved", [Text("one"), img(1), Text(" two"), img(2)])
    enc = encode_sample(sample, vocab, CFG, random.Random(0))
    assert strip_bos_eos(vocab, enc) == "one" + render_image(img(1).codes) + " two" + render_image(img(2).codes)


def test_sft_matches_render_chat_and_masks_assistant_only(vocab):
    msgs = [Message("user", "what colour?"), Message("assistant", "red"), Message("user", "and?"), Message("assistant", "blue")]
    enc = encode_sample(Sample("sft", messages=msgs, task="vqa"), vocab, CFG, random.Random(0))
    rendered = render_chat([{"role": m.role, "content": m.content} for m in msgs], add_generation_prompt=False)
    assert vocab.to_string(enc.ids) == "<|endoftext|>" + rendered
    assert enc.data_type == "sft/vqa"
    trained = vocab.decode_text([i for i, on in zip(enc.ids, enc.loss) if on])
    assert trained == "red<|im_end|>blue<|im_end|>"


def test_sft_speech_is_content_only_as_input_and_four_layers_as_output(vocab):
    q, a = speech(3), speech(4)
    msgs = [Message("user", [q]), Message("assistant", [a])]
    enc = encode_sample(Sample("sft", messages=msgs, mode="voice"), vocab, CFG, random.Random(0))
    s = vocab.to_string(enc.ids)
    assert render_speech(q.codes, timbre=False, codebook_size=32) in s
    assert render_speech(a.codes, timbre=True, codebook_size=32) + "<|im_end|>" in s
    assert "Please respond to the user with speech only" in s


def test_prompt_ends_with_generation_prompt(vocab):
    ids = encode_prompt([Message("user", "hi")], vocab)
    assert vocab.to_string(ids) == "<|endoftext|>" + render_chat([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize(
    "sample, message",
    [
        (Sample("image_text_pair", []), "empty"),
        (Sample("nonsense", [Text("x")]), "unknown data type 'nonsense'"),
        (Sample("image_text_pair", [Text("x")]), "exactly one Image"),
        (Sample("language", [Text("  ")]), "empty"),
        (Sample("sft", messages=[]), "no messages"),
        (Sample("sft", messages=[Message("user", "x")]), "end with an assistant"),
        (Sample("image_text_pair", [Image(), Text("x")]), "no codes"),
        (Sample("image_text_pair", [Image(codes=torch.full((8,), 99)), Text("x")]), "out of range"),
    ],
)
def test_bad_samples_raise_clear_errors(vocab, sample, message):
    with pytest.raises(ValueError, match=message):
        encode_sample(sample, vocab, CFG, random.Random(0))
