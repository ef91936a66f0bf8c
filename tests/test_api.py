"""The Python API on a tiny run directory: loading, media in, media out, errors."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import soundfile as sf
import torch
from PIL import Image as PILImage

from conftest import SMALL_LAYOUT, make_run_dir
from mio.api import MIO, save_segments
from mio.generate import DecodingConfig
from mio.segments import Image, Malformed, Message, Speech, Text, Video

GREEDY = DecodingConfig.greedy()
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, text_tokenizer) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("run"), text_tokenizer)


@pytest.fixture(scope="module")
def mio(run_dir) -> MIO:
    return MIO.from_pretrained(run_dir, device="cpu")


def tone(rate: int, seconds: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(rate * seconds)) / rate
    return 0.3 * torch.sin(2 * math.pi * 220 * t)


def picture(color: str = "red") -> PILImage.Image:
    return PILImage.new("RGB", (40, 30), color)


def test_from_pretrained_loads_everything(mio):
    assert mio.vocab.layout == SMALL_LAYOUT and mio.context_length == 400
    assert mio.image_tokenizer.tokens_per_image == 8 and mio.speech_tokenizer.codebook_size == 32
    assert mio.device == torch.device("cpu") and not mio.model.training


def test_layout_is_inferred_without_run_json(run_dir, tmp_path):
    bare = shutil.copytree(run_dir, tmp_path / "bare")
    (bare / "run.json").unlink()
    loaded = MIO.from_pretrained(bare, device="cpu")
    assert loaded.vocab.layout == SMALL_LAYOUT and loaded.context_length == 1024


def test_chat_with_mixed_media_returns_decoded_media(mio):
    content = [Text("look:"), Image(image=picture()), Speech(wave=tone(22050), sample_rate=22050),
               Video(frames=[picture("blue"), picture("green")]), "what is it?"]
    for modality, kind in (("image", Image), ("video", Video), ("speech", Speech)):
        reply = mio.chat([{"role": "user", "content": content}], output_modalities={modality},
                         decoding=GREEDY, max_new_tokens=40, seed=0)
        assert reply and all(isinstance(s, kind) for s in reply)
        for seg in reply:
            if isinstance(seg, Speech):
                assert seg.codes.shape[0] == 4 and seg.wave.dim() == 1 and seg.sample_rate == 16000
            for frame in seg.frames if isinstance(seg, Video) else [seg] if isinstance(seg, Image) else []:
                assert frame.codes.shape == (8,) and frame.image.size == (32, 32)


def test_voice_mode_answers_in_speech_only(mio):
    reply = mio.chat([Message("user", "hello")], mode="voice", max_new_tokens=30, seed=1)
    assert reply and all(isinstance(s, Speech) and s.wave is not None for s in reply)


def test_chat_batch_equals_single_chats_when_greedy(mio):
    chats = [[{"role": "user", "content": t}] for t in ("a red circle", "the green triangle is big", "hello")]
    batched = mio.chat_batch(chats, decoding=GREEDY, max_new_tokens=16, batch_size=2)
    singles = [mio.chat(c, decoding=GREEDY, max_new_tokens=16) for c in chats]
    assert [[s.text for s in r] for r in batched] == [[s.text for s in r] for r in singles]


def test_complete_continues_a_raw_prompt(mio):
    reply = mio.complete("Please generate an image of ``a red circle'': ", output_modalities={"image"},
                         max_new_tokens=10, seed=0)
    assert len(reply) == 1 and isinstance(reply[0], Image) and reply[0].image is not None
    batch = mio.complete_batch(["a red", [Speech(wave=tone(8000), sample_rate=8000), " Transcribe this speech:"]],
                               decoding=GREEDY, max_new_tokens=8)
    assert len(batch) == 2 and all(isinstance(r, list) for r in batch)


def test_stream_chat_yields_what_chat_returns(mio):
    messages = [{"role": "user", "content": "a red circle"}]
    for modalities in ({"text", "image", "speech"}, {"video"}):
        cfg = dict(output_modalities=modalities, decoding=GREEDY, max_new_tokens=60, seed=0)
        streamed = list(mio.stream_chat(messages, **cfg))
        whole = mio.chat(messages, **cfg)
        text = lambda segs: "".join(s.text for s in segs if isinstance(s, Text))  # noqa: E731
        media = lambda segs: [type(s).__name__ for s in segs if not isinstance(s, Text)]  # noqa: E731
        assert text(streamed) == text(whole) and media(streamed) == media(whole)


def test_guidance_runs_and_stays_well_formed(mio):
    reply = mio.chat([{"role": "user", "content": "draw"}], output_modalities={"image"}, guidance_scale=3.0,
                     max_new_tokens=20, seed=0)
    assert reply and all(isinstance(s, Image) for s in reply)


def test_cut_off_blocks_come_back_malformed_and_are_not_written(mio, tmp_path):
    cfg = DecodingConfig.greedy(max_new_tokens=5, fit_to_budget=False)
    reply = mio.chat([{"role": "user", "content": "draw"}], output_modalities={"image"}, decoding=cfg)
    assert isinstance(reply[-1], Malformed)
    assert save_segments(reply, tmp_path, "cut") == []


def test_save_segments_names_files_predictably(mio, tmp_path):
    reply = [Text("here: "), Image(codes=torch.arange(8)), Video(frames=[Image(codes=torch.arange(8))] * 2),
             Speech(codes=torch.zeros(4, 5, dtype=torch.long)), Malformed("image", "block not closed")]
    paths = save_segments(mio.detokenize(reply), tmp_path / "out", "reply_000")
    assert [p.name for p in paths] == ["reply_000_text.txt", "reply_000_image_00.png", "reply_000_video_00.gif",
                                       "reply_000_speech_00.wav"]
    wave, rate = sf.read(paths[3])
    assert rate == 16000 and len(wave) > 0 and PILImage.open(paths[1]).size == (32, 32)


def test_media_inputs_from_paths(mio, tmp_path):
    picture().save(tmp_path / "cat.png")
    sf.write(tmp_path / "hi.wav", tone(44100).numpy(), 44100)
    segments = mio.tokenize([Image(image=tmp_path / "cat.png"), Speech(wave=str(tmp_path / "hi.wav"))])
    assert segments[0].codes.shape == (8,) and segments[1].codes.shape[0] == 4


def test_bad_inputs_are_clear_value_errors(mio, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    user = lambda content: [{"role": "user", "content": content}]  # noqa: E731
    cases = [
        (dict(messages=user([Image(image=tmp_path / "missing.png")])), "image file not found"),
        (dict(messages=user([Image(image=tmp_path / "broken.png")])), "cannot read image"),
        (dict(messages=user([Speech(wave=tmp_path / "missing.wav")])), "audio file not found"),
        (dict(messages=user([Speech(wave=torch.zeros(16000), sample_rate=16000)])), "silent audio"),
        (dict(messages=[]), "at least one message"),
        (dict(messages=user("hi"), mode="shout"), "unknown chat mode 'shout'"),
        (dict(messages=user("hi"), max_new_tokens=0), "max_new_tokens must be >= 1"),
        (dict(messages=user("hi"), output_modalities={"smell"}), "unknown output modality 'smell'"),
        (dict(messages=user("red " * 500)), r"tokens long; the model's context is 400 tokens"),
        (dict(messages=[{"role": "assistant", "content": "hi"}]), "last message must be the user's"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            mio.chat(**kwargs)


@pytest.mark.parametrize("messages, message", [
    (None, "messages must be a list of messages"),
    ("hi", "messages must be a list of messages .* got a str"),
    ({"role": "user", "content": "hi"}, "messages must be a list of messages .* got a dict"),
    ([42], "message 0: a message is a dict .* got a int"),
    ([{"role": "user", "content": None}], "message 0: content must be a string or a list of parts, got a NoneType"),
    ([{"role": "user", "content": 7}], "message 0: content must be a string or a list of parts, got a int"),
    ([{"role": "robot", "content": "hi"}], "message 0: role must be one of system, user, assistant"),
    ([{"role": "user", "content": [{"type": "video", "video": "x"}]}], "a list of 2 to 8 frame images"),
    ([{"role": "user", "content": [{"type": "film", "film": "x"}]}], "unknown content part type 'film'"),
    ([{"role": "user", "content": [{"type": "text"}]}], "a text part needs 'text'"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.org/a.png"}}]}],
     "URLs are not fetched"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}]}],
     "not valid base64"),
    ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}]}],
     "audio data: not a readable audio file"),
])
def test_malformed_messages_are_named(mio, messages, message):
    with pytest.raises(ValueError, match=message):
        mio.chat(messages)


def test_openai_content_parts_read_as_the_same_segments(mio, tmp_path):
    import base64
    import io

    png = io.BytesIO()
    picture("blue").save(png, format="PNG")
    wav = io.BytesIO()
    sf.write(wav, tone(16000).numpy(), 16000, format="WAV")
    parts = [{"type": "text", "text": "look"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()}},
             {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav.getvalue()).decode(), "format": "wav"}}]
    (tmp_path / "p.png").write_bytes(png.getvalue())
    (tmp_path / "t.wav").write_bytes(wav.getvalue())
    plain = ["look", Image(image=tmp_path / "p.png"), Speech(wave=tmp_path / "t.wav")]
    assert mio.chat_prompt([{"role": "user", "content": parts}]) == mio.chat_prompt([{"role": "user", "content": plain}])
    assert mio.chat_prompt([{"role": "user", "content": [{"type": "text", "text": "hi"}]}]) == \
        mio.chat_prompt([{"role": "user", "content": "hi"}])


def test_video_parts_read_as_the_frames_a_video_file_gives(mio, tmp_path):
    import base64
    import io

    from mio.api import load_video
    from mio.media.video import write_mp4

    colours = ["red", "green", "blue", "yellow", "white", "black"]
    mp4 = write_mp4([picture(c) for c in colours], tmp_path / "clip.mp4")
    uri = "data:video/mp4;base64," + base64.b64encode(mp4.read_bytes()).decode()
    from_file = mio.chat_prompt([{"role": "user", "content": ["what changes?", load_video(mp4)]}])
    parts = [{"type": "text", "text": "what changes?"}, {"type": "video_url", "video_url": {"url": uri}}]
    assert mio.chat_prompt([{"role": "user", "content": parts}]) == from_file

    def png(colour: str) -> str:
        buf = io.BytesIO()
        picture(colour).save(buf, format="PNG")
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

    frames = [{"type": "video", "video": [png(c) for c in colours[:3]]}]
    as_frames = mio.chat_prompt([{"role": "user", "content": frames}])
    assert as_frames == mio.chat_prompt([{"role": "user", "content": [Video(frames=[Image(image=picture(c))
                                                                                      for c in colours[:3]])]}])
    bad_video = "data:video/mp4;base64," + base64.b64encode(b"not a video at all").decode()
    with pytest.raises(ValueError, match="video_url: the video data: cannot read video"):
        mio.chat_prompt([{"role": "user", "content": [{"type": "video_url", "video_url": {"url": bad_video}}]}])
    with pytest.raises(ValueError, match="a list of 2 to 8 frame images"):
        mio.chat_prompt([{"role": "user", "content": [{"type": "video", "video": [png("red")]}]}])


@pytest.mark.parametrize("option, value, message", [
    ("temperature", math.nan, "temperature must be a finite number"),
    ("temperature", math.inf, "temperature must be a finite number"),
    ("temperature", 1e-45, r"temperature must be >= 0.001 and <= 1000000.0, got 1e-45 \(use do_sample=False"),
    ("guidance_scale", 2**70, r"guidance_scale must be >= 1.0 and <= 1000000.0"),
    ("num_beams", 2**70, r"num_beams must be in \[1, 64\]"),
    ("guidance_scale", math.inf, "guidance_scale must be a finite number"),
    ("max_new_tokens", 1.5, "max_new_tokens must be an integer, got 1.5"),
    ("max_new_tokens", "8", "max_new_tokens must be an integer, got '8'"),
    ("max_new_tokens", True, "max_new_tokens must be an integer, got True"),
    ("repetition_penalty", math.nan, "repetition_penalty must be a finite number"),
    ("do_sample", "no", "do_sample must be true or false, got 'no'"),
    ("top_p", 0.0, r"top_p must be > 0.0 and <= 1.0, got 0.0"),
    ("top_k", -1, r"top_k must be in \[0, 2147483647\], got -1"),
    ("seed", "abc", "seed must be an integer, got 'abc'"),
    ("seed", 2**70, r"seed must be in \[0, 9223372036854775807\]"),
    ("seed", -1, r"seed must be in \[0, "),
])
def test_bad_decoding_options_are_named_before_decoding(mio, option, value, message):
    with pytest.raises(ValueError, match=message):
        mio.chat([{"role": "user", "content": "hi"}], **{option: value})


def test_the_largest_seed_decodes_in_batches(mio):
    chats = [[{"role": "user", "content": f"hi {k}"}] for k in range(3)]
    replies = mio.chat_batch(chats, seed=2**63 - 1, batch_size=1, max_new_tokens=4)
    assert len(replies) == 3


def test_incomplete_model_directories_are_clear_errors(run_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        MIO.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        MIO.from_pretrained(tmp_path)
    no_tokenizer = tmp_path / "no_tokenizer"
    shutil.copytree(run_dir, no_tokenizer)
    for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"):
        (no_tokenizer / name).unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match="has no text tokenizer"):
        MIO.from_pretrained(no_tokenizer)


def _broken_copy(run_dir: Path, tmp_path: Path, name: str) -> Path:
    copy = tmp_path / name
    shutil.copytree(run_dir, copy)
    return copy


def test_damaged_model_directories_are_refused_with_the_file_named(run_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    half = _broken_copy(run_dir, tmp_path, "half")
    tensors = load_file(half / "model.safetensors")
    save_file(dict(list(tensors.items())[: len(tensors) // 2]), half / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"weights lack \d+ of the model's tensors .* the checkpoint is incomplete"):
        MIO.from_pretrained(half)

    truncated = _broken_copy(run_dir, tmp_path, "truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated: cannot load the model weights"):
        MIO.from_pretrained(truncated)

    bad_tokenizer = _broken_copy(run_dir, tmp_path, "bad_tokenizer")
    (bad_tokenizer / "tokenizer.json").write_text("{ not json")
    with pytest.raises(ValueError, match="bad_tokenizer: cannot load the text tokenizer"):
        MIO.from_pretrained(bad_tokenizer)

    bad_run = _broken_copy(run_dir, tmp_path, "bad_run")
    (bad_run / "run.json").write_text("[1, 2")
    with pytest.raises(ValueError, match=r"run.json: not valid JSON"):
        MIO.from_pretrained(bad_run)

    swapped = _broken_copy(run_dir, tmp_path, "swapped")
    shutil.rmtree(swapped / "image_tokenizer")
    shutil.copytree(swapped / "speech_tokenizer", swapped / "image_tokenizer")
    with pytest.raises(ValueError, match="image_tokenizer holds a 'mio-speech' tokenizer, not the ImageTokenizer expected there"):
        MIO.from_pretrained(swapped)


def test_media_edge_cases_are_refused_or_read_right(mio):
    user = lambda *content: [{"role": "user", "content": list(content)}]  # noqa: E731
    cases = [
        (Speech(wave=torch.ones(1) * 0.5, sample_rate=16000), "under the minimum of 0.1 s"),
        (Speech(wave=tone(16000, seconds=0.01), sample_rate=16000), "under the minimum of 0.1 s"),
        (Speech(wave=tone(16000), sample_rate=10**9), "sample rate 1000000000 Hz is outside"),
        (Speech(wave=tone(16000), sample_rate=True), "sample_rate must be a positive integer"),
        (Image(codes=torch.full((SMALL_LAYOUT.tokens_per_image,), 1.5)), "must be integers, got a torch.float32 tensor"),
        (Image(codes=[True] * SMALL_LAYOUT.tokens_per_image), "must be integers, got True"),
        (Speech(codes=torch.zeros(4, 5, dtype=torch.bool)), "must be integers"),
    ]
    for segment, message in cases:
        with pytest.raises(ValueError, match=message):
            mio.chat(user(segment, "hi"), max_new_tokens=2)
    from mio.media.audio import prepare_wave

    quiet = tone(16000)
    assert mio.tokenize([Speech(wave=quiet * 1e20, sample_rate=16000)])[0].codes is not None
    loud, plain = (prepare_wave(w, 16000, 16000, max_seconds=10) for w in (quiet * 1e20, quiet))
    assert torch.allclose(loud, plain, atol=1e-6) and plain.abs().max() > 0.1  # the same sound, not silence


def test_devices_are_checked_against_the_machine(run_dir):
    with pytest.raises(ValueError, match="unknown device 'banana'"):
        MIO.from_pretrained(run_dir, device="banana")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            MIO.from_pretrained(run_dir, device="cuda")


def test_reply_files_stay_inside_their_folder(mio, tmp_path):
    from mio.api import file_stem

    reply = [Text("hi")]
    with pytest.raises(ValueError, match="file prefix '../../x' must be"):
        save_segments(reply, tmp_path / "out", prefix="../../x")
    (paths,) = [save_segments(reply, tmp_path / "out", prefix=file_stem("../../x"))]
    assert paths == [tmp_path / "out" / "_._.._x_text.txt"]
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        save_segments(reply, tmp_path / "file")
