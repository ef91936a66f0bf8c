"""SEED-Tokenizer-2: the released key layout, loading (pickle with weights_only, safetensors),
refusal of files that do not fit, encode/embed/decode, and the Q-Former's causality."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from mio.tokenizers.seed_tokenizer import (
    TINY_CONFIG,
    SeedImageTokenizer,
    SeedTokenizerConfig,
    SeedTokenizerModel,
    write_tiny_replica,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TOKENS = TINY_CONFIG.num_query_tokens


def _images(n: int = 3, size: int = 40) -> list[PILImage.Image]:
    rng = np.random.default_rng(0)
    return [PILImage.fromarray(rng.integers(0, 256, (size, size + 7, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
    return write_tiny_replica(tmp_path_factory.mktemp("seed"))


@pytest.fixture(scope="module")
def tokenizer(replica):
    return SeedImageTokenizer.load(replica)


def test_released_key_layout():
    """Names and shapes at the released sizes, as SEED's Blip2QformerQuantizer and EVA ViT-g hold them."""
    with torch.device("meta"):
        state = SeedTokenizerModel(SeedTokenizerConfig()).state_dict()
    shapes = {k: list(v.shape) for k, v in state.items()}
    expected = {
        "visual_encoder.cls_token": [1, 1, 1408],
        "visual_encoder.pos_embed": [1, 257, 1408],
        "visual_encoder.patch_embed.proj.weight": [1408, 3, 14, 14],
        "visual_encoder.patch_embed.proj.bias": [1408],
        "visual_encoder.blocks.0.norm1.weight": [1408],
        "visual_encoder.blocks.0.attn.qkv.weight": [4224, 1408],
        "visual_encoder.blocks.0.attn.q_bias": [1408],
        "visual_encoder.blocks.0.attn.v_bias": [1408],
        "visual_encoder.blocks.38.attn.proj.weight": [1408, 1408],
        "visual_encoder.blocks.38.mlp.fc1.weight": [6144, 1408],
        "visual_encoder.blocks.38.mlp.fc2.bias": [1408],
        "visual_encoder.blocks.38.norm2.bias": [1408],
        "ln_vision.weight": [1408],
        "query_tokens": [1, 32, 768],
        "Qformer.bert.embeddings.LayerNorm.weight": [768],
        "Qformer.bert.encoder.layer.0.attention.self.query.weight": [768, 768],
        "Qformer.bert.encoder.layer.0.attention.output.LayerNorm.bias": [768],
        "Qformer.bert.encoder.layer.0.crossattention.self.key.weight": [768, 1408],
        "Qformer.bert.encoder.layer.10.crossattention.self.value.bias": [768],
        "Qformer.bert.encoder.layer.10.crossattention.output.dense.weight": [768, 768],
        "Qformer.bert.encoder.layer.11.intermediate_query.dense.weight": [3072, 768],
        "Qformer.bert.encoder.layer.11.output_query.dense.weight": [768, 3072],
        "Qformer.bert.encoder.layer.11.output_query.LayerNorm.weight": [768],
        "quantize.embedding.weight": [8192, 32],
        "encode_task_layer.0.weight": [768, 768],
        "encode_task_layer.2.weight": [32, 768],
        "decode_task_layer.0.weight": [32, 32],
        "decode_task_layer.2.bias": [768],
        "pos_embed": [1, 32, 768],
        "blocks.3.attn.qkv.bias": [2304],
        "pos_embed_image": [1, 32, 768],
        "blocks_image.0.norm1.weight": [768],
        "blocks_image.3.attn.qkv.weight": [2304, 768],
        "blocks_image.3.attn.qkv.bias": [2304],
        "blocks_image.3.attn.proj.weight": [768, 768],
        "blocks_image.3.mlp.fc1.weight": [3072, 768],
        "blocks_image.3.mlp.fc2.weight": [768, 3072],
        "image_down.0.weight": [256, 768],
        "image_down.2.weight": [128, 256],
        "image_down.4.weight": [32, 128],
        "distill_image_proj.weight": [1024, 1024],
        "distill_image_proj.bias": [1024],
    }
    assert {k: shapes.get(k) for k in expected} == expected
    absent = ["visual_encoder.blocks.39.norm1.weight", "visual_encoder.blocks.0.attn.qkv.bias", "visual_encoder.norm.weight",
              "Qformer.bert.encoder.layer.1.crossattention.self.key.weight",
              "Qformer.bert.encoder.layer.0.intermediate.dense.weight", "Qformer.bert.encoder.layer.0.output.dense.weight",
              "Qformer.bert.embeddings.word_embeddings.weight", "Qformer.cls.predictions.bias", "image_down.0.bias"]
    assert not [k for k in absent if k in shapes]
    # EVA: 4 + 39 blocks x 13; the rest: 3 embeddings, ln_vision 2, Q-Former 2 + 12 x 16 + 6 x 10,
    # codebook 1, task layers 8, two decoders 2 x 4 x 12, image_down 3, distill_image_proj 2.
    assert sum(k.startswith("visual_encoder.") for k in shapes) == 4 + 39 * 13
    assert len(shapes) == 511 + 3 + 2 + 2 + 12 * 16 + 6 * 10 + 1 + 8 + 96 + 3 + 2


def test_replica_files_have_released_layout(replica):
    vision = torch.load(replica / "eva_vit_g.pth", map_location="cpu", weights_only=True)
    quantizer = torch.load(replica / "seed_quantizer.pt", map_location="cpu", weights_only=True)
    width, hidden = TINY_CONFIG.vision_width, TINY_CONFIG.qformer_hidden
    assert not [k for k in vision if k.startswith("visual_encoder.")]
    assert list(vision["blocks.0.attn.q_bias"].shape) == [width]
    assert f"blocks.{TINY_CONFIG.vision_depth}.attn.v_bias" in vision  # the tower's unused last block
    assert "ln_vision.weight" in quantizer and not [k for k in quantizer if k.startswith("visual_encoder.")]
    assert list(quantizer["Qformer.bert.encoder.layer.0.crossattention.self.key.weight"].shape) == [hidden, width]
    assert "Qformer.bert.encoder.layer.1.crossattention.self.key.weight" not in quantizer
    assert list(quantizer["quantize.embedding.weight"].shape) == [TINY_CONFIG.codebook_size, TINY_CONFIG.codebook_dim]
    assert json.loads((replica / "config.json").read_text())["config"]["num_query_tokens"] == TOKENS


def test_encode_codes(tokenizer):
    images = _images()
    codes = tokenizer.encode(images)
    assert codes.dtype == torch.long and codes.shape == (3, TOKENS) == (3, tokenizer.tokens_per_image)
    assert 0 <= codes.min() and codes.max() < tokenizer.codebook_size
    assert torch.equal(codes, tokenizer.encode(images))
    assert torch.equal(codes[1:2], tokenizer.encode(images[1:2]))
    assert len({tuple(row) for row in codes.tolist()}) > 1  # different images, different codes
    assert tokenizer.encode([]).shape == (0, TOKENS)


def test_same_image_in_other_modes_gives_same_codes(tokenizer):
    rgb = _images(1)[0]
    rgba = rgb.convert("RGBA")  # fully opaque
    assert torch.equal(tokenizer.encode([rgb]), tokenizer.encode([rgba]))


def test_embed(tokenizer):
    codes = tokenizer.encode(_images(2))
    embeds = tokenizer.embed(codes)
    assert embeds.dtype == torch.float32 and embeds.shape == (2, TINY_CONFIG.image_features_dim)
    assert torch.equal(embeds, tokenizer.embed(codes))
    assert torch.allclose(tokenizer.embed(codes[0]), embeds[:1])
    with pytest.raises(ValueError, match="integers"):
        tokenizer.embed(codes.float())
    with pytest.raises(ValueError, match="outside the codebook"):
        tokenizer.embed(torch.full((1, TOKENS), TINY_CONFIG.codebook_size))
    with pytest.raises(ValueError, match=r"\[N, 8\]"):
        tokenizer.embed(torch.zeros(1, TOKENS + 1, dtype=torch.long))


def test_decode_needs_a_decoder(replica, tokenizer):
    codes = tokenizer.encode(_images(2))
    with pytest.raises(ValueError, match="unCLIP"):
        tokenizer.decode(codes)

    class StubDecoder:
        def decode(self, embeds):
            self.seen = embeds
            return [PILImage.new("RGB", (8, 8)) for _ in range(len(embeds))]

    stub = StubDecoder()
    images = SeedImageTokenizer.load(replica, decoder=stub).decode(codes)
    assert len(images) == 2 and all(isinstance(im, PILImage.Image) for im in images)
    assert torch.equal(stub.seen, tokenizer.embed(codes))


def test_save_to_safetensors_round_trips(tmp_path, tokenizer):
    tokenizer.save(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"seed_quantizer.safetensors", "eva_vit_g.safetensors", "config.json"}
    images = _images()
    again = SeedImageTokenizer.load(tmp_path)
    assert torch.equal(again.encode(images), tokenizer.encode(images))
    codes = tokenizer.encode(images)
    assert torch.equal(again.embed(codes), tokenizer.embed(codes))


def test_safetensors_preferred_over_pickle(tmp_path):
    write_tiny_replica(tmp_path, seed=0)
    other = write_tiny_replica(tmp_path / "other", seed=1, pickle_format=False)
    for name in ("seed_quantizer.safetensors", "eva_vit_g.safetensors"):
        (tmp_path / name).write_bytes((other / name).read_bytes())
    images = _images()
    assert torch.equal(SeedImageTokenizer.load(tmp_path).encode(images), SeedImageTokenizer.load(other).encode(images))


def test_prefixed_vision_keys_accepted(tmp_path, tokenizer):
    write_tiny_replica(tmp_path)
    path = tmp_path / "eva_vit_g.pth"
    state = torch.load(path, weights_only=True)
    torch.save({f"visual_encoder.{k}": v for k, v in state.items()}, path)
    images = _images()
    assert torch.equal(SeedImageTokenizer.load(tmp_path).encode(images), tokenizer.encode(images))


@pytest.mark.parametrize(("file", "change", "message"), [
    ("seed_quantizer.pt", lambda s: s.pop("Qformer.bert.encoder.layer.0.crossattention.self.key.weight"),
     "seed_quantizer.pt: missing tensor 'Qformer.bert.encoder.layer.0.crossattention.self.key.weight'"),
    ("eva_vit_g.pth", lambda s: s.update({"blocks.1.attn.q_bias": torch.zeros(3)}),
     "eva_vit_g.pth: tensor 'blocks.1.attn.q_bias' has shape [3]"),
    ("seed_quantizer.pt", lambda s: s.update({"Qformer.bert.encoder.layer.1.crossattention.self.key.weight": torch.zeros(1)}),
     "seed_quantizer.pt: unexpected tensor 'Qformer.bert.encoder.layer.1.crossattention.self.key.weight'"),
    ("eva_vit_g.pth", lambda s: s.pop("cls_token"), "eva_vit_g.pth: missing tensor 'cls_token'"),
])
def test_files_that_do_not_fit_are_refused(tmp_path, file, change, message):
    write_tiny_replica(tmp_path)
    state = torch.load(tmp_path / file, weights_only=True)
    change(state)
    torch.save(state, tmp_path / file)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        SeedImageTokenizer.load(tmp_path)


def test_pickled_objects_are_refused(tmp_path):
    write_tiny_replica(tmp_path)
    torch.save({"quantize.embedding.weight": torch.zeros(1), "note": {1, 2}}, tmp_path / "seed_quantizer.pt")
    with pytest.raises(ValueError, match="seed_quantizer.pt"):
        SeedImageTokenizer.load(tmp_path)


def test_without_config_the_released_sizes_apply(tmp_path):
    write_tiny_replica(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(ValueError, match=r"eva_vit_g.pth: tensor 'cls_token' has shape \[1, 1, 32\], expected \[1, 1, 1408\]"):
        SeedImageTokenizer.load(tmp_path)


def test_missing_files_are_named(tmp_path):
    write_tiny_replica(tmp_path)
    (tmp_path / "eva_vit_g.pth").unlink()
    with pytest.raises(FileNotFoundError, match="eva_vit_g"):
        SeedImageTokenizer.load(tmp_path)


def test_qformer_self_attention_is_causal(tokenizer):
    """Changing query k changes no output before k (code i depends on queries <= i only)."""
    model = tokenizer.model
    queries = model.query_tokens.detach().clone()
    # Not the replica's seed: its stream drew query_tokens, and a perturbation parallel to a query is
    # removed by LayerNorm.
    generator = torch.Generator().manual_seed(1234)
    image = torch.randn(1, TINY_CONFIG.num_patches + 1, TINY_CONFIG.vision_width, generator=generator)
    base = model.Qformer(queries, image)
    for k in (1, TOKENS // 2, TOKENS - 1):
        moved = queries.clone()
        moved[:, k] += torch.randn(queries.shape[-1], generator=generator)  # not a constant: LayerNorm would remove it
        out = model.Qformer(moved, image)
        assert torch.allclose(out[:, :k], base[:, :k], atol=1e-6, rtol=0)
        assert not torch.allclose(out[:, k], base[:, k])


def test_matches_transformers_blip2_modules(tokenizer):
    """Our EVA tower + ln_vision and causal Q-Former compute what transformers' BLIP-2 modules
    compute with the same weights (its Q-Former given a causal mask, its vision model with
    ln_vision as the post-layernorm)."""
    blip2 = pytest.importorskip("transformers.models.blip_2.modeling_blip_2")
    cfg, model = tokenizer.config, tokenizer.model
    state = model.state_dict()
    vision = blip2.Blip2VisionModel(blip2.Blip2VisionConfig(
        hidden_size=cfg.vision_width, intermediate_size=int(cfg.vision_width * cfg.vision_mlp_ratio),
        num_hidden_layers=cfg.vision_depth, num_attention_heads=cfg.vision_heads, image_size=cfg.image_size,
        patch_size=cfg.patch_size, layer_norm_eps=cfg.vision_eps, qkv_bias=True, hidden_act="gelu")).eval()
    names = {"cls_token": "embeddings.class_embedding", "pos_embed": "embeddings.position_embedding",
             "patch_embed.proj": "embeddings.patch_embedding", "blocks.": "encoder.layers.", "norm1": "layer_norm1",
             "norm2": "layer_norm2", "attn.proj": "self_attn.projection", "attn.qkv": "self_attn.qkv"}
    theirs = {}
    for key, value in state.items():
        if key.startswith("visual_encoder.") and not key.endswith(("q_bias", "v_bias")):
            key = key.removeprefix("visual_encoder.")
            for ours, hf in names.items():
                key = key.replace(ours, hf)
            theirs[key] = value
    for i in range(cfg.vision_depth):
        q, v = (state[f"visual_encoder.blocks.{i}.attn.{n}_bias"] for n in "qv")
        theirs[f"encoder.layers.{i}.self_attn.qkv.bias"] = torch.cat((q, torch.zeros_like(q), v))
    theirs |= {"post_layernorm.weight": state["ln_vision.weight"], "post_layernorm.bias": state["ln_vision.bias"]}
    vision.post_layernorm.eps = cfg.ln_vision_eps
    vision.load_state_dict(theirs, strict=True)
    pixels = torch.randn(2, 3, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(5))
    image = model.ln_vision(model.visual_encoder(pixels))
    assert torch.allclose(image, vision(pixel_values=pixels).last_hidden_state, atol=1e-5)

    qformer = blip2.Blip2QFormerModel(blip2.Blip2QFormerConfig(
        hidden_size=cfg.qformer_hidden, num_hidden_layers=cfg.qformer_layers, num_attention_heads=cfg.qformer_heads,
        intermediate_size=cfg.qformer_intermediate, cross_attention_frequency=cfg.cross_attention_freq,
        encoder_hidden_size=cfg.vision_width, layer_norm_eps=cfg.qformer_eps, hidden_act="gelu")).eval()
    rename = lambda k: k.replace("embeddings.LayerNorm", "layernorm").replace("attention.self.", "attention.attention.")
    prefix = "Qformer.bert."
    qformer.load_state_dict({rename(k.removeprefix(prefix)): v for k, v in state.items() if k.startswith(prefix)})
    queries = model.query_tokens.expand(2, -1, -1)
    causal = torch.tril(torch.ones(2, 1, TOKENS, TOKENS, dtype=torch.bool))
    expected = qformer(query_embeds=queries, encoder_hidden_states=image, attention_mask=causal).last_hidden_state
    assert torch.allclose(model.Qformer(queries, image), expected, atol=1e-5)
