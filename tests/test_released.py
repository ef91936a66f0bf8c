"""The released MIO-7B layout end to end, on tiny random-weight replicas (`released_replica.py`):
load, image in and out (SEED-Tokenizer-2 + unCLIP), speech in and out (SpeechTokenizer),
through `MIO.chat`, `mio generate` and `mio chat`; `mio convert` to safetensors; no pickle
beyond weights-only loading."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

pytest.importorskip("sentencepiece")
pytest.importorskip("einops")
from mio.api import MIO  # noqa: E402
from mio.cli.main import main  # noqa: E402
from mio.segments import Image, Speech, Text  # noqa: E402
from released_replica import SPEECH_CONFIG, write_released_replica  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
TINY_DECODING = {"max_new_tokens": 80}


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    pytest.importorskip("diffusers")
    return write_released_replica(tmp_path_factory.mktemp("MIO-7B-Instruct"))


@pytest.fixture(scope="module")
def mio(released) -> MIO:
    return MIO.from_pretrained(released, device="cpu")


def _picture() -> PILImage.Image:
    pixels = np.zeros((40, 40, 3), np.uint8)
    pixels[5:25, 5:25] = (220, 30, 30)
    return PILImage.fromarray(pixels)


def _tone(seconds: float = 0.3, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_the_released_layout_loads_every_part(released, mio):
    from mio.tokenizers.seed_tokenizer import SeedImageTokenizer
    from mio.tokenizers.speechtokenizer_adapter import SpeechTokenizerAdapter
    from mio.tokenizers.unclip_decoder import UnclipDecoder

    assert isinstance(mio.image_tokenizer, SeedImageTokenizer)
    assert isinstance(mio.image_tokenizer.decoder, UnclipDecoder)
    assert isinstance(mio.speech_tokenizer, SpeechTokenizerAdapter)
    layout = mio.vocab.layout
    assert layout.image_codebook_size == mio.image_tokenizer.codebook_size
    assert layout.tokens_per_image == mio.image_tokenizer.tokens_per_image
    assert (layout.speech_codebook_size, layout.speech_layers) == (SPEECH_CONFIG["codebook_size"], 4)
    config = json.loads((released / "config.json").read_text())
    assert mio.vocab.image_start == config["image_bos_id"] and mio.vocab.image_end == config["image_eos_id"]


def test_image_in_image_out(mio):
    (image,) = mio.tokenize([_picture()])
    assert image.codes.shape == (mio.image_tokenizer.tokens_per_image,)
    assert image.codes.dtype == torch.long and int(image.codes.max()) < mio.image_tokenizer.codebook_size
    reply = mio.chat([{"role": "user", "content": [_picture(), "Please generate an image like this one."]}],
                     output_modalities={"image"}, seed=0, **TINY_DECODING)
    pictures = [s for s in reply if isinstance(s, Image)]
    assert pictures, reply
    assert all(isinstance(p.image, PILImage.Image) and p.image.mode == "RGB" for p in pictures)


def test_speech_in_speech_out(mio):
    (speech,) = mio.tokenize([Speech(wave=_tone(), sample_rate=16000)])
    assert speech.codes.shape[0] == 4 and int(speech.codes.max()) < SPEECH_CONFIG["codebook_size"]
    reply = mio.chat([{"role": "user", "content": [Speech(wave=_tone(), sample_rate=16000), "Answer me."]}],
                     mode="voice", seed=0, **TINY_DECODING)
    spoken = [s for s in reply if isinstance(s, Speech)]
    assert spoken, reply
    assert all(s.wave is not None and s.wave.ndim == 1 and s.sample_rate == 16000 for s in spoken)


def test_text_reply_from_an_image_and_a_question(mio):
    reply = mio.chat([{"role": "user", "content": [_picture(), "What is in this picture?"]}],
                     output_modalities={"text"}, seed=0, max_new_tokens=8)
    assert reply and all(isinstance(s, Text) for s in reply)


def test_mio_generate_and_chat_commands(released, tmp_path, monkeypatch):
    _picture().save(tmp_path / "in.png")
    out = tmp_path / "out"
    assert main(["generate", "--model", str(released), "--prompt", f"{{image:{tmp_path / 'in.png'}}} Draw it again.",
                 "--output-modalities", "image", "--max-new-tokens", "80", "--out", str(out)]) == 0
    assert sorted(p.suffix for p in out.iterdir()) and any(p.suffix == ".png" for p in out.iterdir())
    monkeypatch.setattr("sys.stdin", io.StringIO(f"/image {tmp_path / 'in.png'}\nWhat is this?\n/voice\nSay hi.\n/quit\n"))
    assert main(["chat", "--model", str(released), "--max-new-tokens", "40", "--out", str(tmp_path / "chat")]) == 0
    assert any(p.suffix == ".wav" for p in (tmp_path / "chat").iterdir())


def test_base_checkpoint_continues_a_pretraining_template(released, tmp_path):
    out = tmp_path / "base"
    assert main(["generate", "--model", str(released), "--base", "--max-new-tokens", "40", "--out", str(out),
                 "--prompt", "Please generate an image of ``a red square'': "]) == 0


def test_without_the_decoder_images_stay_codes(tmp_path, caplog):
    pytest.importorskip("diffusers")
    bare = write_released_replica(tmp_path / "no-decoder", with_decoder=False)
    mio = MIO.from_pretrained(bare, device="cpu")
    assert not mio.image_tokenizer.can_decode
    reply = mio.chat([{"role": "user", "content": "Draw a red square."}], output_modalities={"image"}, seed=0,
                     **TINY_DECODING)
    pictures = [s for s in reply if isinstance(s, Image)]
    assert pictures and all(p.image is None and p.codes is not None for p in pictures)
    assert "returned as codes" in caplog.text


def test_convert_writes_safetensors_that_load_to_the_same_model(released, mio, tmp_path):
    dst = tmp_path / "converted"
    assert main(["convert", str(released), str(dst)]) == 0
    pickles = [p for p in dst.rglob("*") if p.suffix in (".bin", ".pt", ".pth")]
    assert pickles == []
    assert (dst / "model.safetensors.index.json").is_file()
    assert (dst / "seed-tokenizer-2" / "seed_quantizer.safetensors").is_file()
    assert (dst / "SpeechTokenizer" / "SpeechTokenizer.safetensors").is_file()
    again = MIO.from_pretrained(dst, device="cpu")
    ids = torch.tensor([mio.chat_prompt([{"role": "user", "content": "hello"}])])
    with torch.no_grad():
        assert torch.equal(mio.model(ids).logits, again.model(ids).logits)
    picture = _picture()
    assert torch.equal(mio.tokenize([picture])[0].codes, again.tokenize([picture])[0].codes)
    assert torch.equal(mio.speech_tokenizer.encode(_tone(), 16000), again.speech_tokenizer.encode(_tone(), 16000))
    assert main(["convert", str(released), str(dst)]) == 2  # not over an existing copy without --overwrite


def test_pickles_that_are_not_plain_weights_are_refused(released, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(released, bad)
    shard = next(bad.glob("pytorch_model-*.bin"))

    class Payload:  # what an attacker's pickle would hold: any object, not tensors
        def __reduce__(self):
            return (print, ("this must never run",))

    shard.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="cannot load the model weights"):
        MIO.from_pretrained(bad, device="cpu")
    with pytest.raises(ValueError, match="not a weights-only checkpoint"):
        from mio.released import convert

        convert(bad, tmp_path / "bad-converted")
