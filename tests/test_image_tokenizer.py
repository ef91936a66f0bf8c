"""The embedded image tokenizer: config, training, save/load, encode/decode, bad inputs."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mio.config import ConfigError, load
from mio.media.image import ImageFileError, open_image, to_rgb
from mio.tokenizers.base import ImageTokenizer, load_tokenizer
from mio.tokenizers.image import (
    EmbeddedImageTokenizer,
    ImageTokenizerConfig,
    ImageTokenizerModel,
    images_to_tensor,
    locality_bias,
)
from mio.toyworld.scenes import GRID, Scene, SceneObject, render, sample_scenes
from mio.train.image_tokenizer import (
    ImageSet,
    ImageTrainConfig,
    canonical_codes,
    canonical_renders,
    cell_contents,
    cell_information,
    codebook_stats,
    finetune_decoder,
    foreground_mask,
    invariance_loss,
    load_images,
    mutual_information,
    reconstruction_losses,
    reconstruction_quality,
    render_scene_set,
    slot_attribute_targets,
    train,
    train_from_config,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tokenizer"
TINY = CONFIGS / "image_tiny.toml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("image_tok")
    metrics = train_from_config(TINY, out_dir=out)
    return out, metrics


@pytest.mark.parametrize("name", ["image_tiny.toml", "image_default.toml", "image_vq.toml"])
def test_shipped_configs_parse(name):
    cfg = load(ImageTrainConfig, CONFIGS / name)
    assert cfg.model.image_size % cfg.model.patch_size == 0


def test_default_config_matches_the_embedded_preset():
    cfg = load(ImageTrainConfig, CONFIGS / "image_default.toml").model
    # Three codes per cell of the world's 3x3 grid, the same weights for every cell, naming
    # size, colour and shape.
    assert (cfg.image_size, cfg.tokens_per_image, cfg.query_regions, cfg.share_regions) == (64, 27, (3, 3), True)
    assert (cfg.codebook_size, cfg.slot_codebooks) == (15, (3, 7, 5))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="multiple"):
        load(ImageTokenizerConfig, {"image_size": 60, "conv_channels": [8, 8, 8]})
    with pytest.raises(ValueError, match="unknown key"):
        load(ImageTrainConfig, {"model": {"tokens": 3}})


def test_training_writes_a_loadable_tokenizer_and_metrics(trained):
    out, metrics = trained
    assert json.loads((out / "config.json").read_text())["type"] == "mio-image"
    assert (out / "model.safetensors").is_file()
    on_disk = json.loads((out / "metrics.json").read_text())
    for key in ("psnr", "ssim", "codebook_usage", "codebook_perplexity", "encode_images_per_s",
                "decode_images_per_s", "judge_exact", "train_seconds"):
        assert key in on_disk and math.isfinite(on_disk[key])
    assert 0 < on_disk["codebook_usage"] <= 1 and on_disk["codebook_perplexity"] >= 1
    assert on_disk.keys() == metrics.keys()
    for key, value in metrics.items():
        assert on_disk[key] == (value if isinstance(value, list) else pytest.approx(value, nan_ok=True)), key


def test_metrics_include_the_writability_probes(trained):
    _, metrics = trained
    tokens = load(ImageTrainConfig, TINY).model.tokens_per_image
    for key in ("consistency", "consistency_jitter", "consistency_tint", "cell_information_share"):
        assert 0 <= metrics[key] <= 1, key
    assert 0 <= metrics["codes_changed_per_object_change"] <= tokens
    assert len(metrics["consistency_per_position"]) == tokens
    assert all(0 <= v <= 1 for v in metrics["consistency_per_position"])
    assert metrics["consistency"] == pytest.approx(np.mean(metrics["consistency_per_position"]))
    assert all(0 <= v <= 1 for v in metrics["cell_information_share_per_position"])
    assert all(v >= 0 for v in metrics["cell_information_per_position"])
    assert all(0 <= c < GRID * GRID for c in metrics["cell_per_position"])


def test_save_load_round_trip_is_exact(trained, tmp_path):
    out, _ = trained
    tok = EmbeddedImageTokenizer.load(out)
    assert isinstance(tok, ImageTokenizer)
    assert isinstance(load_tokenizer(out), EmbeddedImageTokenizer)
    images = [render(s, 48) for s in sample_scenes(5, seed=1)]  # resized to image_size on encode
    codes = tok.encode(images)
    assert codes.shape == (5, tok.tokens_per_image) and codes.dtype == torch.long
    assert int(codes.max()) < tok.codebook_size and int(codes.min()) >= 0
    tok.save(tmp_path / "copy")
    again = EmbeddedImageTokenizer.load(tmp_path / "copy")
    assert torch.equal(again.encode(images), codes)
    decoded = tok.decode(codes)
    assert [d.size for d in decoded] == [(tok.image_size, tok.image_size)] * 5
    assert all(d.mode == "RGB" for d in decoded)
    assert np.array_equal(np.asarray(again.decode(codes)[0]), np.asarray(decoded[0]))
    # Batching does not change results.
    tok.batch_size = 2
    assert torch.equal(tok.encode(images), codes)


def test_encode_accepts_every_image_mode(trained):
    tok = EmbeddedImageTokenizer.load(trained[0])
    rgb = render(sample_scenes(1, seed=2)[0], 64)
    variants = [
        rgb.convert("L"), rgb.convert("RGBA"), rgb.convert("P"), rgb.convert("1"), rgb.convert("CMYK"),
        rgb.convert("LA"), Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257),
        rgb.resize((300, 200)),
    ]
    codes = tok.encode(variants)
    assert codes.shape == (len(variants), tok.tokens_per_image)
    assert tok.encode([]).shape == (0, tok.tokens_per_image)


def test_to_rgb_scales_16_bit_and_composites_alpha():
    wide = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    assert wide.mode.startswith("I")
    assert to_rgb(wide).getpixel((0, 0)) == (127, 127, 127)
    clear = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert to_rgb(clear).getpixel((0, 0)) == (255, 255, 255)


def test_decode_rejects_bad_codes(trained):
    tok = EmbeddedImageTokenizer.load(trained[0])
    good = torch.zeros(2, tok.tokens_per_image, dtype=torch.long)
    assert len(tok.decode(good[0])) == 1
    with pytest.raises(ValueError, match="outside the codebook"):
        tok.decode(torch.full_like(good, tok.codebook_size))
    with pytest.raises(ValueError, match="outside the codebook"):
        tok.decode(good - 1)
    with pytest.raises(ValueError, match="shape"):
        tok.decode(good[:, :-1])
    with pytest.raises(ValueError, match="integers"):
        tok.decode(good.float())


def test_load_rejects_other_types(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"type": "mio-speech", "config": {}}))
    with pytest.raises(ValueError, match="mio-speech"):
        EmbeddedImageTokenizer.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        EmbeddedImageTokenizer.load(tmp_path / "nowhere")


def test_load_images_from_folder_and_manifest(tmp_path):
    scenes = sample_scenes(3, seed=4)
    for i, s in enumerate(scenes):
        render(s).save(tmp_path / f"{i}.png")
    render(scenes[0]).convert("P").save(tmp_path / "palette.gif")
    folder = load_images(tmp_path)
    assert len(folder.images) == 4 and all(im.mode == "RGB" for im in folder.images)
    manifest = tmp_path / "data.jsonl"
    manifest.write_text("\n".join(json.dumps({"image": f"{i}.png", "caption": f"scene {i}"}) for i in range(3)) + "\n\n")
    data = load_images(manifest)
    assert data.captions == ["scene 0", "scene 1", "scene 2"]


def test_bad_image_files_raise_clear_errors(tmp_path):
    good = tmp_path / "good.png"
    render(sample_scenes(1)[0]).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"this is not a jpeg")
    for path in (truncated, corrupt, tmp_path / "missing.png"):
        with pytest.raises(ImageFileError, match=path.name):
            open_image(path)
    with pytest.raises(ImageFileError, match="pixel limit"):
        open_image(good, max_pixels=100)
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text('{"image": "good.png"}\nnot json\n')
    with pytest.raises(ImageFileError, match="bad.jsonl:2"):
        load_images(manifest)
    manifest.write_text('{"image": "corrupt.jpg", "caption": "x"}\n')
    with pytest.raises(ImageFileError, match="corrupt.jpg"):
        load_images(manifest)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageFileError, match="no image files"):
        load_images(empty)
    assert issubclass(ImageFileError, ValueError)


def test_metric_helpers():
    stats = codebook_stats(torch.tensor([[0, 1], [2, 3]]), codebook_size=8)
    assert stats["codebook_usage"] == 0.5 and stats["codebook_perplexity"] == pytest.approx(4.0)
    image = render(sample_scenes(1)[0])
    noisy = Image.fromarray(np.clip(np.asarray(image).astype(int) + 3, 0, 255).astype(np.uint8))
    quality = reconstruction_quality([image], [noisy])
    assert 35 < quality["psnr"] < 45 and 0.9 < quality["ssim"] <= 1.0


def _one_square() -> torch.Tensor:
    """A 64x64 scene with one big red square in the centre cell, as a [1, 3, 64, 64] tensor."""
    scene = Scene((SceneObject("square", "red", "big", 1, 1),), background=(230, 230, 230))
    return images_to_tensor([render(scene, 64)], 64)


def test_foreground_mask_marks_the_object_pixels():
    pixels = _one_square()
    mask = foreground_mask(pixels, 0.25)
    red = (pixels[:, 0] > 0.5) & (pixels[:, 1] < 0)
    assert mask.shape == (1, 1, 64, 64)
    assert torch.equal(mask[:, 0].bool(), red)
    assert 0.05 < mask.mean() < 0.15


def test_pixel_loss_weighs_the_foreground_and_its_margin_more():
    target = _one_square()
    cfg = ImageTrainConfig(foreground_weight=5.0, foreground_dilation=2)
    mask = foreground_mask(target, cfg.foreground_distance)
    rows, cols = mask[0, 0].nonzero(as_tuple=True)
    top, left = int(rows.min()), int(cols.min())
    no_matte = torch.zeros(1, 1, 64, 64)

    def loss_with_error_at(y: int, x: int) -> float:
        recon = target.clone()
        recon[0, :, y, x] += 0.5
        return reconstruction_losses(recon, no_matte, target, cfg)[0].item()

    inside, just_outside, far = loss_with_error_at(top, left + 3), loss_with_error_at(top - 1, left + 3), loss_with_error_at(1, 1)
    assert inside == pytest.approx(6 * far)
    assert just_outside == pytest.approx(inside)  # the margin: an edge weighs the same on both sides
    plain = ImageTrainConfig(foreground_weight=0.0)
    recon = target + 0.1
    assert reconstruction_losses(recon, no_matte, target, plain)[0].item() == pytest.approx(0.01)


def test_matte_loss_rewards_a_matte_on_the_foreground():
    target = _one_square()
    cfg = ImageTrainConfig()
    mask = foreground_mask(target, cfg.foreground_distance)
    right = reconstruction_losses(target, 8 * (2 * mask - 1), target, cfg)[1]
    wrong = reconstruction_losses(target, -8 * (2 * mask - 1), target, cfg)[1]
    assert right < 0.01 < 1 < wrong


def test_decoder_returns_pixels_and_a_matte():
    model = ImageTokenizerModel(load(ImageTrainConfig, TINY).model)
    quantized = torch.randn(2, model.cfg.tokens_per_image, model.cfg.codebook_dim)
    pixels, matte_logits = model.decode_with_matte(quantized)
    side = model.cfg.image_size
    assert pixels.shape == (2, 3, side, side) and matte_logits.shape == (2, 1, side, side)
    # Decoding picks each pixel's foreground or background colour by the matte's side of 0.5...
    out = model.decoder_outputs(quantized)
    foreground, background, matte = out[:, :3], out[:, 3:6], out[:, 6:]
    hard = model.decode_quantized(quantized)
    assert torch.equal(hard, torch.where(matte > 0, foreground, background))
    assert not torch.allclose(hard, pixels)
    # ... and, without `hard_matte`, is the training-time blend.
    soft = ImageTokenizerModel(dataclasses.replace(model.cfg, hard_matte=False))
    soft.load_state_dict(model.state_dict())
    assert torch.equal(soft.decode_quantized(quantized), pixels)


def test_decoder_finetuning_trains_only_the_decoder_on_frozen_codes():
    cfg = dataclasses.replace(load(ImageTrainConfig, TINY), steps=4, canonical_target=False, invariance_weight=0.0)
    images = [render(s, cfg.model.image_size) for s in sample_scenes(32, seed=5)]
    pixels = images_to_tensor(images, cfg.model.image_size)
    model = train(cfg, ImageSet(images, [None] * len(images))).model
    before = {k: v.clone() for k, v in [*model.named_parameters(), *model.named_buffers()]}
    codes = model.quantize(model.encode_features(pixels))[1]

    def loss() -> float:
        with torch.no_grad():
            return sum(reconstruction_losses(*model.decode_with_matte(model.embed_codes(codes)), pixels, cfg)).item()

    start = loss()
    finetune_decoder(model, pixels, dataclasses.replace(cfg, decoder_steps=30, decoder_lr=3e-3), torch.Generator().manual_seed(0))
    decoder = {id(p) for p in model.decoder_parameters()}
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]) != (id(param) in decoder), name
    for name, buffer in model.named_buffers():  # the codebook and its EMA statistics
        assert torch.equal(buffer, before[name]), name
    assert torch.equal(model.quantize(model.encode_features(pixels))[1], codes)
    assert loss() < start


def test_canonical_target_trains_the_decoder_to_draw_canonical_renders():
    cfg = dataclasses.replace(load(ImageTrainConfig, TINY), canonical_target=True, invariance_weight=1.0, decoder_steps=2)
    train_set = render_scene_set(32, seed=6, image_size=cfg.model.image_size)
    tok = train(cfg, train_set)
    targets = canonical_renders(train_set.scenes, cfg.model.image_size)
    assert targets.shape == (32, 3, cfg.model.image_size, cfg.model.image_size)
    # Targets differ from the inputs (tint, jitter) but are identical for scenes with the same objects.
    assert not torch.equal(targets, images_to_tensor(train_set.images, cfg.model.image_size))
    again = canonical_renders([dataclasses.replace(s, background=(210, 220, 230), jitter_seed=7) for s in train_set.scenes],
                              cfg.model.image_size)
    assert torch.equal(targets, again)
    decoded = tok.decode(tok.encode(train_set.images[:3]))
    assert [d.size for d in decoded] == [(cfg.model.image_size,) * 2] * 3


def test_canonical_options_refuse_image_files():
    for option in ({"canonical_target": True}, {"invariance_weight": 1.0}):
        with pytest.raises(ConfigError, match="procedural scenes"):
            load(ImageTrainConfig, {"data": "images/", **option})
    cfg = dataclasses.replace(load(ImageTrainConfig, TINY), canonical_target=True)
    images = [render(s, 32) for s in sample_scenes(4)]
    with pytest.raises(ValueError, match="procedural scenes"):
        train(cfg, ImageSet(images, [None] * 4))


def test_canonical_codes_are_the_quantizer_codes_and_leave_the_codebook_alone():
    model = ImageTokenizerModel(load(ImageTrainConfig, TINY).model).train()
    pixels = images_to_tensor([render(s, 32) for s in sample_scenes(16, seed=7)], 32)
    model.quantize(model.encode_features(pixels))  # k-means initialises the codebook
    before = {k: v.clone() for k, v in model.named_buffers()}
    anchor = canonical_codes(model, pixels)
    for name, buffer in model.named_buffers():  # a training-mode quantizer call would update these
        assert torch.equal(buffer, before[name]), name
    assert torch.allclose(anchor, model.eval().quantize(model.encode_features(pixels))[0])
    assert invariance_loss(anchor, anchor) == 0 < invariance_loss(anchor + 0.1, anchor)


def test_locality_bias_shares_queries_out_over_regions():
    # One region: queries tile the whole 8x8 patch grid in raster order, 4 rows x 8 columns.
    homes = locality_bias(32, 8, 0.3).argmax(dim=1)
    assert (homes // 8).tolist() == [r for r in (0, 2, 4, 6) for _ in range(8)]
    assert (homes % 8).tolist() == list(range(8)) * 4
    # 3x3 regions: 32 queries as 4,4,4,4,4,3,3,3,3 in raster order, each at home in its region.
    homes = locality_bias(32, 9, 0.3, (3, 3)).argmax(dim=1)
    regions = (homes // 9 // 3) * 3 + (homes % 9 // 3)
    assert regions.tolist() == [r for r, n in enumerate([4] * 5 + [3] * 4) for _ in range(n)]
    with pytest.raises(ValueError, match="query_regions"):
        load(ImageTokenizerConfig, {"tokens_per_image": 4, "query_regions": [3, 3]})


def test_shared_regions_give_the_same_content_the_same_codes_in_every_region():
    # 48 px in 3x3 regions of 8-px patches: 16-px regions, so no resampling blurs the copy.
    cfg = ImageTokenizerConfig(image_size=48, conv_channels=(4, 8, 8), width=16, heads=2, encoder_layers=1,
                               qformer_layers=1, decoder_layers=1, tokens_per_image=18, codebook_size=16,
                               codebook_dim=4, query_regions=(3, 3), share_regions=True)
    model = ImageTokenizerModel(cfg).eval()
    pixels = torch.full((2, 3, 48, 48), -1.0)
    patch = torch.rand(3, 16, 16) * 2 - 1
    pixels[0, :, 0:16, 0:16] = patch  # region 0 of the first image
    pixels[1, :, 16:32, 32:48] = patch  # region 5 of the second
    with torch.no_grad():
        features = model.encode_features(pixels)
    assert features.shape == (2, 18, 16)
    slots = lambda region: slice(2 * region, 2 * region + 2)  # noqa: E731
    assert torch.allclose(features[0, slots(0)], features[1, slots(5)], atol=1e-5)
    # A region's codes see only that region: the empty regions of both images agree.
    for region in (1, 2, 3, 4, 6, 7, 8):
        assert torch.allclose(features[0, slots(region)], features[1, slots(region)], atol=1e-5)
    assert not torch.allclose(features[0, slots(0)], features[0, slots(5)], atol=1e-3)
    # Other image sizes are resampled to whole patches per region; the decoder still draws the image.
    out = ImageTokenizerModel(dataclasses.replace(cfg, image_size=64))(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert out["codes"].shape == (2, 18) and out["reconstruction"].shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="divisible"):
        load(ImageTokenizerConfig, {"tokens_per_image": 32, "query_regions": [3, 3], "share_regions": True})
    with pytest.raises(ValueError, match="square"):
        load(ImageTokenizerConfig, {"tokens_per_image": 36, "query_regions": [3, 4], "share_regions": True})


def test_cell_information_finds_the_cell_a_position_describes():
    scenes = sample_scenes(300, seed=8)
    contents = cell_contents(scenes)
    assert contents.shape == (300, GRID * GRID)
    assert all((contents[i] > 0).sum() == len(s.objects) for i, s in enumerate(scenes))
    x = np.arange(200) % 5
    assert mutual_information(x, x) == pytest.approx(math.log(5))
    assert mutual_information(x, np.zeros(200)) == pytest.approx(0)
    noise = torch.from_numpy(np.random.default_rng(0).integers(0, 50, 300))
    codes = torch.stack([torch.from_numpy(contents[:, 4]), noise], dim=1)
    info = cell_information(codes, scenes, seed=0)
    assert info["cell_per_position"][0] == 4
    assert info["cell_information_share_per_position"][0] > 0.9
    assert info["cell_information_per_position"][0] > 5 * info["cell_information_per_position"][1]
    assert 0.9 < info["cell_information_share"] <= 1



def _slot_config(**overrides) -> ImageTrainConfig:
    """A test-sized tokenizer whose three codes per cell name size, colour and shape."""
    model = {"image_size": 48, "conv_channels": [8, 16, 16], "width": 32, "heads": 2, "encoder_layers": 1,
             "qformer_layers": 1, "decoder_layers": 1, "tokens_per_image": 27, "query_regions": [3, 3],
             "share_regions": True, "codebook_size": 15, "slot_codebooks": [3, 7, 5], "codebook_dim": 8}
    return load(ImageTrainConfig, {"scenes": 256, "val_images": 16, "steps": 300, "batch_size": 16, "lr": 3e-3,
                                   "continuous_steps": 0, "warmup_steps": 10, "canonical_target": True,
                                   "slot_attributes": ["size", "color", "shape"], "log_every": 100,
                                   "model": model, **overrides})


def test_slot_codebooks_make_each_code_one_attribute_of_its_cell():
    cfg = _slot_config()
    tok = train(cfg, render_scene_set(cfg.scenes, seed=3, image_size=48))
    held_out = sample_scenes(32, seed=99)
    codes = tok.encode([render(s, 48) for s in held_out]).view(32, GRID * GRID, 3)
    # Slot k's codes come from its own range: size 0-2, colour 3-9, shape 10-14.
    offsets = torch.tensor([0, 3, 10])
    expected = slot_attribute_targets(held_out, cfg.slot_attributes) + offsets
    assert (codes - offsets).min() >= 0 and ((codes - offsets) < torch.tensor([3, 7, 5])).all()
    # Code 0 of a slot is an empty cell, code 1 + i the attribute's i-th value, on unseen scenes.
    assert (codes == expected).double().mean() > 0.9
    # Any code decodes in any position (a model may write a colour where a shape goes).
    images = tok.decode(torch.randint(0, 15, (2, 27)))
    assert [im.size for im in images] == [(48, 48)] * 2
    model = tok.model
    with torch.no_grad():
        quantized, _, _ = model.quantize(model.encode_features(images_to_tensor([render(held_out[0], 48)], 48)))
        assert torch.allclose(model.embed_codes(codes[:1].flatten(1)), quantized)
    # In slot order the stream holds every cell's size code, then every colour, then every
    # shape; decoding reads them back to the same pictures.
    by_slot = EmbeddedImageTokenizer(dataclasses.replace(tok.config, code_order="slot"), tok.model)
    pictures = [render(s, 48) for s in held_out[:4]]
    stream = by_slot.encode(pictures)
    assert torch.equal(stream, codes[:4].transpose(1, 2).flatten(1))
    assert (stream[:, :9] < 3).all() and (stream[:, 18:] >= 10).all()
    assert [np.asarray(im).tobytes() for im in by_slot.decode(stream)] == \
        [np.asarray(im).tobytes() for im in tok.decode(codes[:4].flatten(1))]


def test_slot_options_are_checked():
    with pytest.raises(ConfigError, match="add up to"):
        load(ImageTokenizerConfig, {"tokens_per_image": 27, "query_regions": [3, 3], "share_regions": True,
                                    "codebook_size": 16, "slot_codebooks": [3, 7, 5]})
    with pytest.raises(ConfigError, match="share_regions"):
        load(ImageTokenizerConfig, {"tokens_per_image": 27, "codebook_size": 15, "slot_codebooks": [3, 7, 5]})
    with pytest.raises(ConfigError, match=r"slot_codebooks = \[3, 5, 7\]"):
        _slot_config(slot_attributes=["size", "shape", "color"])
    with pytest.raises(ConfigError, match="code_order 'slot' needs slot_codebooks"):
        load(ImageTokenizerConfig, {"code_order": "slot"})
    with pytest.raises(ConfigError, match="code_order must be one of region, slot"):
        load(ImageTokenizerConfig, {"code_order": "columns"})
    with pytest.raises(ConfigError, match="unknown slot_attributes"):
        _slot_config(slot_attributes=["size", "color", "texture"])
    with pytest.raises(ConfigError, match="invariance_weight"):
        _slot_config(invariance_weight=1.0)
    with pytest.raises(ConfigError, match="procedural scenes"):
        _slot_config(data="images/")
