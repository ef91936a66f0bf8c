import pytest

from mio.templates import PRETRAIN_TEMPLATES, STD_SYSTEM, VOICE_SYSTEM, render_chat


def test_std_chat_is_byte_identical_to_released_format():
    s = render_chat([{"role": "user", "content": "Hi"}])
    assert s == (
        "<|im_start|>system\nYou are MIO, an AI assistant capable of understanding and generating images, "
        "text, videos, and speech, selecting the appropriate modality according to the context.<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_voice_and_custom_modes_and_multi_turn():
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    voice = render_chat(msgs, mode="voice", add_generation_prompt=False)
    assert voice.startswith("<|im_start|>system\n" + VOICE_SYSTEM + "<|im_end|>\n")
    assert voice.endswith("<|im_start|>assistant\nb<|im_end|>\n<|im_start|>user\nc<|im_end|>")
    custom = render_chat([{"role": "system", "content": "S"}] + msgs, mode="custom")
    assert custom.startswith("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\na")
    assert STD_SYSTEM not in custom


def test_bad_chats_raise():
    with pytest.raises(ValueError, match="custom"):
        render_chat([{"role": "user", "content": "a"}], mode="custom")
    with pytest.raises(ValueError, match="mode"):
        render_chat([{"role": "user", "content": "a"}], mode="loud")
    with pytest.raises(ValueError, match="own system prompt"):
        render_chat([{"role": "system", "content": "x"}, {"role": "user", "content": "a"}])
    with pytest.raises(ValueError, match="at least one"):
        render_chat([])


def test_appendix_b_templates():
    assert PRETRAIN_TEMPLATES["image_caption"].format(media="<I>", text="c") == "<I> The caption of this image is: c"
    assert PRETRAIN_TEMPLATES["tts"].format(media="<S>", text="t") == "Please generate a speech of ``t'': <S>"
    assert PRETRAIN_TEMPLATES["asr_stage3"].format(media="<S>", text="t") == "<S> The transcription of this speech is: t"
