"""A corpus of odd media files, made here (no committed binaries), through every reader a user
reaches: each file gives media or a ValueError naming it, never another exception."""

from __future__ import annotations

import io
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image as PILImage

from conftest import make_run_dir
from mio.api import MIO, load_image, load_speech, load_video

pytestmark = pytest.mark.usefixtures("one_thread")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` (a decompression bomb's first bytes)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def _wav_with_rate(rate: int, samples: int = 1600) -> bytes:
    data = (np.sin(np.arange(samples) / 5) * 8000).astype("<i2").tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, 1, rate, rate * 2 % 2**32, 2, 16) + b"data" + struct.pack("<I", len(data))
    return header + data


def _encoded(image: PILImage.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def _wav(wave: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def odd_files(folder: Path) -> dict[str, Path]:
    """Write the corpus; returns name -> path."""
    rng = np.random.default_rng(0)
    tone = np.sin(2 * math.pi * 220 * np.arange(16000) / 16000).astype(np.float32) * 0.3
    png = _encoded(PILImage.new("RGB", (16, 16), "red"), "PNG")
    files = {
        "empty.png": b"", "empty.wav": b"", "empty.gif": b"",
        "noise.png": rng.bytes(300), "noise.wav": rng.bytes(300), "noise.gif": rng.bytes(300),
        "text.png": b"this is not a picture\n", "text.wav": b"RIFF but not really",
        "truncated.png": png[: len(png) // 2], "bomb.png": _png_header_only(100_000, 100_000),
        "tiny.png": _encoded(PILImage.new("RGB", (1, 1), "blue"), "PNG"),
        "tall.png": _encoded(PILImage.new("RGB", (1, 300), "green"), "PNG"),
        "gray16.png": _encoded(PILImage.fromarray(np.arange(256, dtype=np.uint16).reshape(16, 16) * 200), "PNG"),
        "rgba.png": _encoded(PILImage.new("RGBA", (16, 16), (255, 0, 0, 0)), "PNG"),
        "cmyk.jpg": _encoded(PILImage.new("CMYK", (16, 16), (0, 255, 0, 0)), "JPEG"),
        "float.tiff": _encoded(PILImage.fromarray(np.full((8, 8), np.nan, np.float32), "F"), "TIFF"),
        "one_frame.gif": _encoded(PILImage.new("RGB", (16, 16), "red"), "GIF"),
        "absurd_rate.wav": _wav_with_rate(2_000_000_000), "rate_1.wav": _wav_with_rate(1),
        "one_sample.wav": _wav(np.array([0.5], np.float32), 16000),
        "short.wav": _wav(tone[:160], 16000), "silent.wav": _wav(np.zeros(16000, np.float32), 16000),
        "loud.wav": _wav(tone * 1e6, 16000), "stereo.wav": _wav(np.stack([tone, tone * 0.5], 1), 16000),
        "nan.wav": _wav(np.full(16000, np.nan, np.float32), 16000, "FLOAT"), "long.wav": _wav(np.tile(tone, 200), 16000),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "folder.png").mkdir()
    return {name: folder / name for name in [*files, "folder.png"]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return odd_files(tmp_path_factory.mktemp("odd"))


@pytest.fixture(scope="module")
def mio(tmp_path_factory, text_tokenizer) -> MIO:
    return MIO.from_pretrained(make_run_dir(tmp_path_factory.mktemp("run"), text_tokenizer), device="cpu")


READERS = {
    "image": lambda mio, p: mio.tokenize([load_image(p)]),
    "speech": lambda mio, p: mio.tokenize([load_speech(p)]),
    "video": lambda mio, p: mio.tokenize([load_video(p)]),
    "chat part": lambda mio, p: mio.chat_prompt([{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": str(p)}}]}]),
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_every_odd_file_gives_media_or_a_named_error(corpus, mio, reader):
    outcomes = {}
    for name, path in corpus.items():
        try:
            READERS[reader](mio, path)
            outcomes[name] = "read"
        except ValueError as e:  # FileNotFoundError is an OSError: a folder or a gone file
            assert name in str(e) or str(path) in str(e) or "audio" in str(e) or "video" in str(e), (name, e)
            outcomes[name] = "refused"
    refused = {n for n, o in outcomes.items() if o == "refused"}
    must_refuse = {"empty.png", "empty.wav", "noise.png", "noise.wav", "text.png", "truncated.png", "bomb.png",
                   "absurd_rate.wav", "rate_1.wav", "one_sample.wav", "short.wav", "silent.wav", "nan.wav",
                   "long.wav", "folder.png"}
    relevant = {"image": ".png .jpg .tiff .gif", "chat part": ".png .jpg .tiff .gif", "speech": ".wav",
                "video": ".gif"}[reader].split()
    expected = {n for n in must_refuse if Path(n).suffix in relevant}
    assert expected <= refused, expected - refused
    if reader in ("image", "chat part"):
        assert {"tiny.png", "tall.png", "gray16.png", "rgba.png", "cmyk.jpg", "float.tiff"} <= set(outcomes) - refused
    if reader == "speech":
        assert {"loud.wav", "stereo.wav"} <= set(outcomes) - refused
