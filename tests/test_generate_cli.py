"""`mio generate`, `mio chat` and `mio bench generate` end to end on a tiny run directory."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import soundfile as sf
import torch
from PIL import Image as PILImage

from conftest import make_run_dir
from mio.api import MIO
from mio.cli.chat import ChatSession, chat_loop
from mio.cli.generate import parse_prompt
from mio.cli.main import main
from mio.eval import bench_generate
from mio.segments import Image, Speech, Text, Video

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, text_tokenizer) -> Path:
    return make_run_dir(tmp_path_factory.mktemp("run"), text_tokenizer)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("media")
    PILImage.new("RGB", (48, 48), "red").save(folder / "cat.png")
    frames = [PILImage.new("RGB", (48, 48), c) for c in ("red", "green", "blue", "white", "black")]
    frames[0].save(folder / "clip.gif", save_all=True, append_images=frames[1:], duration=200)
    t = torch.arange(11025) / 11025
    sf.write(folder / "hi.wav", (0.3 * torch.sin(2 * math.pi * 300 * t)).numpy(), 11025)
    return folder


def test_prompt_syntax():
    segments = parse_prompt("Describe {image:cat.png} and {speech: a b.wav}{video:v.mp4} {{literal}}")
    assert [type(s) for s in segments] == [Text, Image, Text, Speech, Video, Text]
    assert segments[1].image == Path("cat.png") and segments[3].wave == Path("a b.wav")
    assert segments[4].frames == Path("v.mp4") and segments[5].text == " {literal}"
    assert parse_prompt("{audio:x.flac}")[0].wave == Path("x.flac")


def test_generate_writes_the_reply_to_a_folder(run_dir, media, tmp_path, capsys):
    prompt = f"Describe {{image:{media / 'cat.png'}}} {{video:{media / 'clip.gif'}}} {{speech:{media / 'hi.wav'}}}"
    out = tmp_path / "out"
    argv = ["generate", "--model", str(run_dir), "--prompt", prompt, "--out", str(out), "--device", "cpu",
            "--output-modalities", "text,image,speech", "--max-new-tokens", "60", "--seed", "3"]
    assert main(argv) == 0
    manifest = json.loads((out / "reply_000.json").read_text())
    assert manifest["text"] in capsys.readouterr().out
    assert manifest["files"] and all(Path(f).is_file() for f in manifest["files"])
    assert {Path(f).name.split("_")[2] for f in manifest["files"]} <= {"text.txt", "image", "speech"}


def test_generate_voice_and_base_modes(run_dir, tmp_path):
    assert main(["generate", "--model", str(run_dir), "--prompt", "hello", "--mode", "voice", "--out",
                 str(tmp_path), "--device", "cpu", "--max-new-tokens", "20"]) == 0
    assert (tmp_path / "reply_000_speech_00.wav").is_file()
    assert main(["generate", "--model", str(run_dir), "--base", "--prompt", "Please generate an image of ``x'': ",
                 "--output-modalities", "image", "--out", str(tmp_path), "--prefix", "base", "--device", "cpu",
                 "--max-new-tokens", "10"]) == 0
    assert (tmp_path / "base_image_00.png").is_file()


def test_generate_reports_bad_input_in_one_line(run_dir, tmp_path, caplog):
    common = ["generate", "--model", str(run_dir), "--out", str(tmp_path), "--device", "cpu"]
    assert main(common + ["--prompt", "see {image:/nonexistent.png}"]) == 2
    assert "image file not found" in caplog.text
    assert main(common + ["--prompt", "hi", "--output-modalities", "text,smell"]) == 2
    assert "unknown output modality 'smell'" in caplog.text


def test_bad_devices_outputs_and_stdin_are_one_line_errors(run_dir, tmp_path, caplog, monkeypatch):
    common = ["generate", "--model", str(run_dir), "--prompt", "hi", "--max-new-tokens", "2"]
    assert main(common + ["--out", str(tmp_path / "o"), "--device", "banana"]) == 2
    assert "unknown device 'banana'" in caplog.text
    if not torch.cuda.is_available():
        assert main(common + ["--out", str(tmp_path / "o"), "--device", "cuda"]) == 2
        assert "no CUDA GPU" in caplog.text
    (tmp_path / "taken").write_text("")
    assert main(common + ["--out", str(tmp_path / "taken"), "--device", "cpu"]) == 2
    assert "is a file, not a folder" in caplog.text
    monkeypatch.setattr("sys.stdin", None)
    assert main(["chat", "--model", str(run_dir), "--device", "cpu"]) == 2
    assert "standard input, which is closed" in caplog.text


def test_chat_loop_attaches_media_toggles_voice_and_resets(run_dir, media, tmp_path):
    lines: list[str] = []
    mio = MIO.from_pretrained(run_dir, device="cpu")
    session = ChatSession(mio, tmp_path, lines.append, overrides={"max_new_tokens": 24})
    chat_loop(session, [
        f"/image {media / 'cat.png'}", f"/audio {media / 'hi.wav'}", f"/video {media / 'clip.gif'}",
        "/image /nonexistent.png", "what is this?", "/voice", "say hi", "/reset", "/bogus", "/quit", "never read",
    ])
    assert lines[:3] == [f"(attached image {media / 'cat.png'})", f"(attached audio {media / 'hi.wav'})",
                         f"(attached video {media / 'clip.gif'})"]
    assert lines[3].startswith("error: ") and "image file not found" in lines[3]
    assert "(speech replies on)" in lines and "(new conversation)" in lines
    assert any(line.startswith("unknown command /bogus") for line in lines)
    assert (tmp_path / "turn_001_speech_00.wav").is_file()  # the voice-mode turn
    assert session.turn == 2 and session.history == [] and sum(line.startswith("mio> ") for line in lines) == 2


def test_bench_generate_writes_the_contract_json(tmp_path):
    path = tmp_path / "bench.json"
    assert main(["bench", "generate", "--preset", "tiny", "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    assert set(result) == {"engine_tokens_per_s", "hf_generate_tokens_per_s", "constraint_overhead", "model", "device"}
    for key in ("engine_tokens_per_s", "hf_generate_tokens_per_s"):
        assert set(result[key]) == {"batch1", "batch8"} and all(v > 0 for v in result[key].values())
    assert isinstance(result["constraint_overhead"], float)


def test_bench_engine_matches_hf_greedy_tokens():
    """The benchmark compares like with like: the engine and HF generate produce the same tokens."""
    setup = bench_generate.build(bench_generate.PRESETS["tiny"])
    engine = bench_generate.engine_tokens(setup, batch_size=3, constrain=False)
    assert torch.equal(engine, bench_generate.hf_tokens(setup, batch_size=3))
