"""The unCLIP image decoder (SEED embeddings -> pixels through SD 2.1 unCLIP), on a tiny
random-weight pipeline written offline in the released folder layout."""

from __future__ import annotations

import builtins
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers", reason="the unCLIP decoder needs diffusers: pip install -e '.[diffusion]'")

from mio.tokenizers.unclip_decoder import (  # noqa: E402
    RELEASED_SUBFOLDER,
    UnclipConfig,
    UnclipDecoder,
    check_unclip_folder,
    write_tiny_unclip,
)

pytestmark = pytest.mark.usefixtures("one_thread")

EMBED_DIM = 16
FAST = UnclipConfig(num_inference_steps=2)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return write_tiny_unclip(tmp_path_factory.mktemp("unclip") / RELEASED_SUBFOLDER, embed_dim=EMBED_DIM)


@pytest.fixture(scope="module")
def decoder(tiny_folder):
    return UnclipDecoder.load(tiny_folder, config=FAST)


def pixels(images):
    return np.stack([np.asarray(image) for image in images]).astype(np.int16)


def clearly_differ(a, b) -> bool:
    """More than a rounding difference: the mean pixel moves by over 1/255."""
    return float(np.abs(a - b).mean()) > 1.0


def embeddings(seed: int, count: int = 2) -> torch.Tensor:
    return torch.randn(count, EMBED_DIM, generator=torch.Generator().manual_seed(seed))


def test_tiny_folder_has_the_released_layout(tiny_folder):
    index = json.loads((tiny_folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableUnCLIPImg2ImgPipeline"
    assert index["feature_extractor"] == ["transformers", "CLIPImageProcessor"]
    for name in ("unet", "vae", "text_encoder", "image_encoder", "image_normalizer"):
        assert list((tiny_folder / name).glob("*.safetensors")), name
    assert (tiny_folder / "tokenizer" / "vocab.json").is_file() and (tiny_folder / "tokenizer" / "merges.txt").is_file()
    assert check_unclip_folder(tiny_folder.parent) == tiny_folder  # the MIO-7B directory holding it


def test_decode_gives_rgb_images_of_the_pipeline_size(decoder):
    assert decoder.embed_dim == EMBED_DIM
    assert decoder.image_size == (32, 32)
    assert decoder.dtype == torch.float32 and decoder.device.type == "cpu"
    images = decoder.decode(embeddings(0))
    assert len(images) == 2
    assert all(image.mode == "RGB" and image.size == (32, 32) for image in images)


def test_seed_makes_decoding_reproducible(decoder):
    embeds = embeddings(1)
    first = pixels(decoder.decode(embeds, seed=7))
    assert np.array_equal(first, pixels(decoder.decode(embeds, seed=7)))
    assert clearly_differ(first, pixels(decoder.decode(embeds, seed=8)))
    # No seed: the config's seed, so the default decode repeats too.
    assert np.array_equal(pixels(decoder.decode(embeds)), pixels(decoder.decode(embeds, seed=FAST.seed)))


def test_different_embeddings_give_different_images(decoder):
    # Same seed, so the starting noise is the same: only the conditioning differs.
    first = pixels(decoder.decode(embeddings(2, count=1), seed=3))
    assert clearly_differ(first, pixels(decoder.decode(embeddings(4, count=1), seed=3)))
    # Within one batch too: each image follows its own embedding.
    pair = pixels(decoder.decode(torch.cat([embeddings(2, count=1), embeddings(4, count=1)]), seed=3))
    assert clearly_differ(pair[0], pair[1])


def test_wrong_embedding_width_is_refused(decoder):
    with pytest.raises(ValueError, match=f"{EMBED_DIM}-d image embeddings, got 12-d"):
        decoder.decode(torch.zeros(2, 12))
    with pytest.raises(ValueError, match=r"shape \[N, 16\]"):
        decoder.decode(torch.zeros(EMBED_DIM))
    with pytest.raises(ValueError, match="NaN"):
        decoder.decode(torch.full((1, EMBED_DIM), float("nan")))


def test_folder_missing_unet_is_refused(tiny_folder, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_folder, broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises(ValueError, match=r"broken is missing unet/ \(the denoising UNet\)"):
        UnclipDecoder.load(broken, config=FAST)


def test_damaged_or_absent_folders_are_refused(tiny_folder, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        UnclipDecoder.load(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no model_index.json"):
        UnclipDecoder.load(tmp_path)
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_folder, damaged)
    (damaged / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="damaged"):
        UnclipDecoder.load(damaged)


def test_noise_level_and_guidance_come_from_the_config(decoder):
    embeds = embeddings(5, count=1)
    base = pixels(decoder.decode(embeds, seed=0))
    for change in ({"noise_level": 500}, {"guidance_scale": 1.0}):
        decoder.config = dataclasses.replace(FAST, **change)
        try:
            assert clearly_differ(base, pixels(decoder.decode(embeds, seed=0))), change
        finally:
            decoder.config = FAST


def test_missing_diffusers_names_the_extra(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_diffusers(name, *args, **kwargs):
        if name == "diffusers" or name.startswith("diffusers."):
            raise ImportError("No module named 'diffusers'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_diffusers)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[diffusion\]"'):
        UnclipDecoder.load(tmp_path)
