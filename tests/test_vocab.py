import pytest
import torch

from mio.segments import Image, Malformed, Speech, Text, Video
from mio.tokenizers.text import build_text_tokenizer
from mio.vocab import Vocab, VocabLayout, render_image, render_speech


def test_render_image_matches_released_format():
    codes = list(range(32))
    s = render_image(codes)
    assert s == "<image>" + "".join(f"<img{i}>" for i in range(32)) + "</image>"
    assert render_image(torch.tensor(codes)) == s


def test_render_speech_content_and_sequential_timbre():
    codes = torch.tensor([[1, 2], [3, 4], [5, 6], [7, 8]])
    assert render_speech(codes, timbre=False) == "<spch><spch1><spch2></spch>"
    assert render_speech(codes, timbre=True) == (
        "<spch><spch1><spch2><spch1027><spch1028><spch2053><spch2054><spch3079><spch3080></spch>"
    )
    assert render_speech(codes.tolist(), timbre=True) == render_speech(codes, timbre=True)
    with pytest.raises(ValueError, match="unequal"):
        render_speech([[1, 2], [3]], timbre=True)


def test_paper_layout_adds_12292_rows():
    assert VocabLayout().num_added == 12292


def test_media_ranges_are_contiguous_and_after_text(vocab, text_tokenizer):
    lo, hi = vocab.image_range
    assert hi - lo == 64
    slo, shi = vocab.speech_range
    assert shi - slo == 4 * 32
    assert vocab.size == len(text_tokenizer)
    assert text_tokenizer.convert_ids_to_tokens(lo + 5) == "<img5>"
    assert text_tokenizer.convert_ids_to_tokens(slo + 32 + 3) == "<spch35>"


def test_typed_media_strings_stay_text(vocab):
    ids = vocab.encode_text("look <img5> and <spch> or <|im_end|> here")
    lo, hi = vocab.image_range
    assert all(not (lo <= i < hi) for i in ids)
    assert vocab.speech_start not in ids and vocab.im_end not in ids
    assert vocab.decode_text(ids) == "look <img5> and <spch> or <|im_end|> here"
    segs = vocab.parse(ids)
    assert len(segs) == 1 and isinstance(segs[0], Text)


def test_image_and_speech_roundtrip_through_parse(vocab):
    img = torch.arange(8) * 7 % 64
    sp = torch.randint(0, 32, (4, 5))
    ids = vocab.encode_text("a") + vocab.image_ids(img) + vocab.speech_ids(sp, timbre=True) + vocab.speech_ids(sp, timbre=False)
    segs = vocab.parse(ids)
    assert [type(s) for s in segs] == [Text, Image, Speech, Speech]
    assert torch.equal(segs[1].codes, img)
    assert torch.equal(segs[2].codes, sp)
    assert torch.equal(segs[3].codes, sp[:1])
    assert vocab.to_string(vocab.image_ids(img)) == render_image(img.tolist()).replace("<image>", "<image>")


def test_to_string_equals_render_for_paper_strings(vocab):
    sp = torch.randint(0, 32, (4, 3))
    assert vocab.to_string(vocab.speech_ids(sp, timbre=True)) == render_speech(sp, timbre=True, codebook_size=32)


def test_out_of_range_codes_raise_clear_errors(vocab):
    with pytest.raises(ValueError, match="image code 64 out of range"):
        vocab.image_ids([64] + [0] * 7)
    with pytest.raises(ValueError, match="has 8 codes, got 3"):
        vocab.image_ids([0, 1, 2])
    with pytest.raises(ValueError, match="speech code 40"):
        vocab.speech_ids([[40]], timbre=False)
    with pytest.raises(ValueError, match="unequal"):
        vocab.speech_ids([[1, 2], [1], [1], [1]], timbre=True)


def test_parse_reports_malformed_blocks(vocab):
    lo, _ = vocab.image_range
    slo, _ = vocab.speech_range
    short = [vocab.image_start] + [lo] * 3 + [vocab.image_end]
    unclosed = [vocab.image_start] + [lo] * 8
    mixed_speech = [vocab.speech_start, slo + 32, slo, slo + 64, slo + 96, vocab.speech_end]  # timbre before content
    uneven = [vocab.speech_start, slo, slo, slo + 32, slo + 64, slo + 96, vocab.speech_end]
    for ids, reason in [
        (short, "3 codes"),
        (unclosed, "not closed"),
        (mixed_speech, "out of order"),
        (uneven, "equal"),
        ([vocab.image_end], "outside"),
    ]:
        segs = vocab.parse(ids)
        bad = [s for s in segs if isinstance(s, Malformed)]
        assert bad and reason in bad[0].reason, (ids, segs)


def test_parse_merges_adjacent_images_into_video(vocab):
    frame = vocab.image_ids(list(range(8)))
    segs = vocab.parse(frame * 3 + vocab.encode_text(" end"), video=True)
    assert isinstance(segs[0], Video) and len(segs[0].frames) == 3
    assert isinstance(segs[1], Text)


def test_noncontiguous_tokens_are_rejected():
    layout = VocabLayout(image_codebook_size=4, tokens_per_image=2, speech_codebook_size=2, speech_layers=4)
    small = VocabLayout(image_codebook_size=2, tokens_per_image=2, speech_codebook_size=2)
    tok = build_text_tokenizer(["hello"] * 5, vocab_size=300, layout=small)
    tok.add_tokens(["<img2>", "<img3>"], special_tokens=True)  # after the speech tokens: not contiguous
    with pytest.raises(ValueError, match="not contiguous"):
        Vocab(tok, layout)
