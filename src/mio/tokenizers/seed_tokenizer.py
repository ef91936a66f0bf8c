"""SEED-Tokenizer-2, the paper's image tokenizer, reimplemented and loadable from the released files.

A released MIO-7B directory holds `seed-tokenizer-2/` with two state_dicts:

- `eva_vit_g.pth`: the EVA ViT-g vision tower (BLIP-2's), keys `cls_token`, `pos_embed`,
  `patch_embed.proj.*`, `blocks.{i}.*`, unprefixed (a `visual_encoder.` prefix is accepted
  too). The file holds the tower's 40 blocks; SEED, like BLIP-2, uses the first 39 and no
  final norm, so the last block (and a final `norm`/`fc_norm`/`head`, should a file carry
  them) is read past, as SEED's non-strict load does.
- `seed_quantizer.pt`: SEED's `Blip2QformerQuantizer` without the vision tower: `ln_vision`,
  `query_tokens`, the causal Q-Former (`Qformer.bert.*`, its text-only parts removed),
  `encode_task_layer`, the codebook `quantize.embedding`, `decode_task_layer`, the unused
  `pos_embed`/`blocks` (SEED's Q-Former-feature reconstruction head), and the image path
  `pos_embed_image`, `blocks_image`, `image_down`, `distill_image_proj`.

Both are read with `torch.load(weights_only=True)`, or from `seed_quantizer.safetensors` /
`eva_vit_g.safetensors` when present (preferred); `save` writes those, so `mio convert` can
turn a released directory into safetensors. Anything that does not fit the model is refused
with a ValueError naming the file and the first missing, unexpected or mis-shaped tensor.

Data flow (SEED's `get_codebook_indices` and `get_codebook_entry`):

    image -> RGB, 224x224 bicubic, CLIP mean/std -> EVA ViT-g (39 blocks) -> ln_vision
          -> causal Q-Former: 32 learned queries, causal self-attention among them,
             cross-attention to the patch features every 2nd layer
          -> encode_task_layer (768 -> 32) -> nearest of 8192 codebook rows -> 32 codes
    codes -> codebook rows -> decode_task_layer (32 -> 768) + pos_embed_image -> 4 ViT blocks
          -> image_down (768 -> 32 per query) -> flatten -> distill_image_proj -> 1024-d embedding

The embedding conditions SD 2.1 unCLIP, which turns it into pixels; that decoder is another
object, given to `SeedImageTokenizer` as `decoder`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image as PILImage
from safetensors.torch import save_file
from torch import nn

from mio.config import load as load_config
from mio.media.image import to_rgb
from mio.tokenizers.base import read_state_dict

logger = logging.getLogger(__name__)

TOKENIZER_TYPE = "seed-tokenizer"
CONFIG_NAME = "config.json"
QUANTIZER_FILES = ("seed_quantizer.safetensors", "seed_quantizer.pt")
VISION_FILES = ("eva_vit_g.safetensors", "eva_vit_g.pth", "eva_vit_g.pt")
VISION_PREFIX = "visual_encoder."

# Tensors a released file may carry that SEED builds and then drops (its non-strict load
# ignores them): the vision tower's blocks past `vision_depth` and its classification top,
# and the Q-Former's text-only parts and position-id buffer.
_IGNORED_VISION = re.compile(r"^(norm|fc_norm|head)\.")
_IGNORED_QUANTIZER = re.compile(
    r"^Qformer\.(cls\.|bert\.embeddings\.(position_ids$|word_embeddings\.|position_embeddings\.)"
    r"|bert\.encoder\.layer\.\d+\.(intermediate|output)\.)"
)
_VISION_BLOCK = re.compile(r"^blocks\.(\d+)\.")


@dataclass
class SeedTokenizerConfig:
    """Sizes of SEED-Tokenizer-2. The defaults are the released model's; tiny replicas for
    tests set small widths (see `write_tiny_replica`)."""

    image_size: int = 224
    """Side of the square image the vision tower reads, in pixels."""
    patch_size: int = 14
    """Side of a ViT patch, in pixels."""
    vision_width: int = 1408
    """Hidden size of the EVA ViT-g tower (also the Q-Former's cross-attention key/value input)."""
    vision_depth: int = 39
    """Vision blocks used: EVA ViT-g has 40, SEED (like BLIP-2) drops the last."""
    vision_heads: int = 16
    """Attention heads of the vision tower (head size 88)."""
    vision_mlp_ratio: float = 4.3637
    """MLP hidden size over width of the vision tower (int(1408 * 4.3637) = 6144)."""
    vision_eps: float = 1e-6
    """LayerNorm epsilon inside the vision blocks."""
    ln_vision_eps: float = 1e-5
    """Epsilon of `ln_vision`, the LayerNorm over the tower's output (torch's default)."""
    qformer_hidden: int = 768
    """Hidden size of the Q-Former (BERT-base)."""
    qformer_layers: int = 12
    """Q-Former layers."""
    qformer_heads: int = 12
    """Q-Former attention heads."""
    qformer_intermediate: int = 3072
    """Hidden size of the Q-Former's query feed-forward."""
    cross_attention_freq: int = 2
    """Layers i with i % cross_attention_freq == 0 cross-attend to the image features."""
    qformer_eps: float = 1e-12
    """LayerNorm epsilon of the Q-Former (BERT's)."""
    num_query_tokens: int = 32
    """Learned queries, one code each: the codes per image."""
    codebook_size: int = 8192
    """Rows of the codebook: distinct image codes."""
    codebook_dim: int = 32
    """Width of a codebook row."""
    decode_depth: int = 4
    """ViT blocks of the code decoder (`blocks_image`, and the unused `blocks`)."""
    decoder_heads: int = 12
    """Attention heads of the code decoder's blocks; must divide `qformer_hidden`."""
    decoder_mlp_ratio: float = 4.0
    """MLP hidden size over width of the code decoder's blocks."""
    decoder_eps: float = 1e-6
    """LayerNorm epsilon of the code decoder's blocks."""
    image_down_dims: tuple[int, ...] = (256, 128, 32)
    """Widths of `image_down`, the bias-free MLP shrinking each decoded query; the last is the
    per-query width that `distill_image_proj` reads num_query_tokens times."""
    image_features_dim: int = 1024
    """Width of the image embedding the unCLIP decoder is conditioned on."""
    image_mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    """Per-channel mean subtracted from [0, 1] pixels (CLIP's)."""
    image_std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    """Per-channel standard deviation the pixels are divided by (CLIP's)."""

    def validate(self) -> None:
        """Raise ValueError when the sizes cannot build a model."""
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        for width, heads, what in ((self.vision_width, self.vision_heads, "vision"),
                                   (self.qformer_hidden, self.qformer_heads, "qformer"),
                                   (self.qformer_hidden, self.decoder_heads, "decoder")):
            if heads < 1 or width % heads:
                raise ValueError(f"{what} heads {heads} do not divide the width {width}")
        if self.cross_attention_freq < 1:
            raise ValueError(f"cross_attention_freq must be at least 1, got {self.cross_attention_freq}")
        if not self.image_down_dims:
            raise ValueError("image_down_dims is empty")
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError("image_mean and image_std need one value per RGB channel")

    def __post_init__(self) -> None:
        self.validate()

    @property
    def num_patches(self) -> int:
        """Patches the vision tower sees (without the class token)."""
        return (self.image_size // self.patch_size) ** 2


# ----------------------------------------------------------------------------- ViT parts


class Mlp(nn.Module):
    """The two-layer GELU feed-forward of a ViT block (`mlp.fc1`, `mlp.fc2`)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class ViTAttention(nn.Module):
    """Bidirectional multi-head self-attention with a fused `qkv` projection.

    EVA's tower stores the projection bias as `q_bias` and `v_bias` (the key has none);
    BLIP's ViT blocks, used by SEED's code decoder, store one `qkv.bias`."""

    def __init__(self, dim: int, heads: int, split_bias: bool):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=not split_bias)
        if split_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        if self.qkv.bias is None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
            qkv = F.linear(x, self.qkv.weight, bias)
        else:
            qkv = self.qkv(x)
        q, k, v = qkv.reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # scale head_dim ** -0.5, as both references
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class ViTBlock(nn.Module):
    """A pre-norm ViT block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, eps: float, split_bias: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = ViTAttention(dim, heads, split_bias)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))  # int() truncates, as the references do

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class EvaVisionTransformer(nn.Module):
    """EVA ViT-g as SEED uses it: patch embedding, class token, absolute position embedding,
    `vision_depth` blocks, no final norm (the output is the last block's)."""

    def __init__(self, cfg: SeedTokenizerConfig):
        super().__init__()
        width = cfg.vision_width
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, width, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + 1, width))
        self.blocks = nn.ModuleList(
            ViTBlock(width, cfg.vision_heads, cfg.vision_mlp_ratio, cfg.vision_eps, split_bias=True)
            for _ in range(cfg.vision_depth)
        )

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalized pixels [N, 3, S, S] -> features [N, 1 + patches, width]."""
        x = self.patch_embed.proj(pixels).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return x


# ----------------------------------------------------------------------------- Q-Former


def _linear_norm(dim_in: int, dim: int, eps: float) -> nn.ModuleDict:
    """BERT's output sublayer (`dense`, `LayerNorm`): LayerNorm(dense(x) + residual)."""
    return nn.ModuleDict({"dense": nn.Linear(dim_in, dim), "LayerNorm": nn.LayerNorm(dim, eps=eps)})


class QFormerAttention(nn.Module):
    """BERT attention: `self.{query,key,value}` then the post-norm `output.{dense,LayerNorm}`.

    Self-attention among the queries is causal (SEED's change to BLIP-2's Q-Former): query i
    attends to queries <= i, so code i depends on codes before it only. Cross-attention
    reads every image feature (keys/values from `kv_width`)."""

    def __init__(self, cfg: SeedTokenizerConfig, kv_width: int):
        super().__init__()
        hidden = cfg.qformer_hidden
        self.heads = cfg.qformer_heads
        # `self.self` is BERT's name for the projections; the key names must match it.
        self.self = nn.ModuleDict({
            "query": nn.Linear(hidden, hidden),
            "key": nn.Linear(kv_width, hidden),
            "value": nn.Linear(kv_width, hidden),
        })
        self.output = _linear_norm(hidden, hidden, cfg.qformer_eps)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Causal self-attention when `context` is None, else cross-attention to `context`."""
        source = hidden if context is None else context
        q = self._split(self.self["query"](hidden))
        k = self._split(self.self["key"](source))
        v = self._split(self.self["value"](source))
        # SEED adds -10000 to masked logits, we use -inf: both give exactly 0 weight in fp32.
        out = F.scaled_dot_product_attention(q, k, v, is_causal=context is None)
        out = out.transpose(1, 2).reshape(hidden.shape)
        return self.output["LayerNorm"](self.output["dense"](out) + hidden)


class QFormerLayer(nn.Module):
    """One Q-Former layer on the query tokens: causal self-attention, cross-attention to the
    image (every `cross_attention_freq`-th layer), then the query feed-forward
    (`intermediate_query`, `output_query`)."""

    def __init__(self, cfg: SeedTokenizerConfig, index: int):
        super().__init__()
        self.attention = QFormerAttention(cfg, cfg.qformer_hidden)
        has_cross = index % cfg.cross_attention_freq == 0
        self.crossattention = QFormerAttention(cfg, cfg.vision_width) if has_cross else None
        self.intermediate_query = nn.ModuleDict({"dense": nn.Linear(cfg.qformer_hidden, cfg.qformer_intermediate)})
        self.output_query = _linear_norm(cfg.qformer_intermediate, cfg.qformer_hidden, cfg.qformer_eps)

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x = self.attention(x)
        if self.crossattention is not None:
            x = self.crossattention(x, image)
        h = F.gelu(self.intermediate_query["dense"](x))
        return self.output_query["LayerNorm"](self.output_query["dense"](h) + x)


class CausalQFormer(nn.Module):
    """SEED's causal Q-Former with LAVIS's parameter names (`bert.embeddings.LayerNorm`,
    `bert.encoder.layer.{i}`); only the query path exists, as SEED deletes the text parts."""

    def __init__(self, cfg: SeedTokenizerConfig):
        super().__init__()
        self.bert = nn.ModuleDict({
            "embeddings": nn.ModuleDict({"LayerNorm": nn.LayerNorm(cfg.qformer_hidden, eps=cfg.qformer_eps)}),
            "encoder": nn.ModuleDict({"layer": nn.ModuleList(QFormerLayer(cfg, i) for i in range(cfg.qformer_layers))}),
        })

    def forward(self, query_embeds: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        """Queries [N, Q, hidden] and image features [N, P, vision_width] -> [N, Q, hidden].
        The embeddings LayerNorm applies to the query embeddings (BERT's embedding step with
        no words)."""
        x = self.bert["embeddings"]["LayerNorm"](query_embeds)
        for layer in self.bert["encoder"]["layer"]:
            x = layer(x, image_embeds)
        return x


class VectorQuantizer(nn.Module):
    """SEED's codebook (`quantize.embedding`): nearest row by squared Euclidean distance."""

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.embedding = nn.Embedding(size, dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """[..., dim] -> codes [...]; the distance is expanded as |z|^2 + |e|^2 - 2 z.e as in
        SEED, so near-ties break the same way."""
        flat = z.reshape(-1, z.shape[-1])
        table = self.embedding.weight
        dist = flat.pow(2).sum(1, keepdim=True) + table.pow(2).sum(1) - 2 * flat @ table.t()
        return dist.argmin(dim=1).reshape(z.shape[:-1])


# ----------------------------------------------------------------------------- whole model


class SeedTokenizerModel(nn.Module):
    """SEED's `Blip2QformerQuantizer` for inference, with the released parameter names."""

    def __init__(self, cfg: SeedTokenizerConfig):
        super().__init__()
        self.config = cfg
        hidden, queries = cfg.qformer_hidden, cfg.num_query_tokens
        self.visual_encoder = EvaVisionTransformer(cfg)
        self.ln_vision = nn.LayerNorm(cfg.vision_width, eps=cfg.ln_vision_eps)
        self.Qformer = CausalQFormer(cfg)
        self.query_tokens = nn.Parameter(torch.zeros(1, queries, hidden))
        self.quantize = VectorQuantizer(cfg.codebook_size, cfg.codebook_dim)
        self.encode_task_layer = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, cfg.codebook_dim))
        self.decode_task_layer = nn.Sequential(
            nn.Linear(cfg.codebook_dim, cfg.codebook_dim), nn.Tanh(), nn.Linear(cfg.codebook_dim, hidden)
        )
        # SEED's head that reconstructs the Q-Former features: in the released file, unused here.
        self.pos_embed = nn.Parameter(torch.zeros(1, queries, hidden))
        self.blocks = self._decoder_blocks(cfg)
        self.pos_embed_image = nn.Parameter(torch.zeros(1, queries, hidden))
        self.blocks_image = self._decoder_blocks(cfg)
        down: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip((hidden, *cfg.image_down_dims[:-1]), cfg.image_down_dims)):
            down += [nn.ReLU()] if i else []
            down.append(nn.Linear(d_in, d_out, bias=False))
        self.image_down = nn.Sequential(*down)
        self.distill_image_proj = nn.Linear(queries * cfg.image_down_dims[-1], cfg.image_features_dim)

    @staticmethod
    def _decoder_blocks(cfg: SeedTokenizerConfig) -> nn.ModuleList:
        return nn.ModuleList(
            ViTBlock(cfg.qformer_hidden, cfg.decoder_heads, cfg.decoder_mlp_ratio, cfg.decoder_eps, split_bias=False)
            for _ in range(cfg.decode_depth)
        )

    def query_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalized pixels [N, 3, S, S] -> Q-Former outputs [N, Q, hidden]."""
        image = self.ln_vision(self.visual_encoder(pixels))
        return self.Qformer(self.query_tokens.expand(pixels.shape[0], -1, -1), image)

    def encode_codes(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalized pixels [N, 3, S, S] -> codes [N, Q] (SEED's `get_codebook_indices`)."""
        return self.quantize(self.encode_task_layer(self.query_features(pixels)))

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [N, Q] -> image embeddings [N, image_features_dim] (SEED's `get_codebook_entry`)."""
        x = self.decode_task_layer(self.quantize.embedding(codes)) + self.pos_embed_image
        for block in self.blocks_image:
            x = block(x)
        return self.distill_image_proj(self.image_down(x).flatten(1))


# ----------------------------------------------------------------------------- loading


def _find(directory: Path, names: Sequence[str]) -> Path:
    for name in names:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(f"{directory}: none of {', '.join(names)} found")


def _vision_state(state: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """The vision tower's tensors, unprefixed, without those SEED reads past."""
    kept = {}
    for key, value in state.items():
        name = key.removeprefix(VISION_PREFIX)
        block = _VISION_BLOCK.match(name)
        if (block and int(block.group(1)) >= depth) or _IGNORED_VISION.match(name):
            continue
        kept[name] = value
    return kept


def _check(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse, naming `path` and the key, a state that misses, adds or mis-shapes a tensor."""
    for key, want in expected.items():
        if key not in state:
            raise ValueError(f"{path}: missing tensor {key!r} (shape {list(want.shape)})")
        if tuple(state[key].shape) != tuple(want.shape):
            raise ValueError(f"{path}: tensor {key!r} has shape {list(state[key].shape)}, expected {list(want.shape)}")
        if not state[key].is_floating_point():
            raise ValueError(f"{path}: tensor {key!r} is {state[key].dtype}, expected floating point")
    for key in state:
        if key not in expected:
            raise ValueError(f"{path}: unexpected tensor {key!r}")


def _read_config(directory: Path) -> SeedTokenizerConfig:
    path = directory / CONFIG_NAME
    if not path.is_file():
        return SeedTokenizerConfig()  # the released directory has none: its sizes are the defaults
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("type") != TOKENIZER_TYPE:
        kind = meta.get("type") if isinstance(meta, dict) else None
        raise ValueError(f"{path}: type is {kind!r}, expected {TOKENIZER_TYPE!r}")
    return load_config(SeedTokenizerConfig, meta.get("config", {}))


def load_model(directory: str | Path) -> SeedTokenizerModel:
    """Build the model from a SEED-Tokenizer-2 directory (released or written by `save`)."""
    directory = Path(directory)
    cfg = _read_config(directory)
    quantizer_path, vision_path = _find(directory, QUANTIZER_FILES), _find(directory, VISION_FILES)
    with torch.device("meta"):  # shapes only: the real tensors come from the files
        model = SeedTokenizerModel(cfg)
    expected = model.state_dict()
    quantizer, vision = read_state_dict(quantizer_path), read_state_dict(vision_path)
    read = len(quantizer) + len(vision)
    # A whole-model dump may carry the tower too; SEED loads it after the tower's own file.
    vision = _vision_state(vision, cfg.vision_depth)
    vision.update(_vision_state({k: v for k, v in quantizer.items() if k.startswith(VISION_PREFIX)}, cfg.vision_depth))
    quantizer = {k: v for k, v in quantizer.items() if not k.startswith(VISION_PREFIX) and not _IGNORED_QUANTIZER.match(k)}
    logger.info("%s: %d tensors read, %d that SEED does not use left out", directory, read, read - len(quantizer) - len(vision))
    _check(vision, {k[len(VISION_PREFIX):]: v for k, v in expected.items() if k.startswith(VISION_PREFIX)}, vision_path)
    _check(quantizer, {k: v for k, v in expected.items() if not k.startswith(VISION_PREFIX)}, quantizer_path)
    state = {k: v.float() for k, v in quantizer.items()} | {VISION_PREFIX + k: v.float() for k, v in vision.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval().requires_grad_(False)


# ----------------------------------------------------------------------------- tokenizer


class EmbeddingDecoder(Protocol):
    """What turns image embeddings into pictures (SD 2.1 unCLIP in MIO)."""

    def decode(self, embeds: torch.Tensor) -> list[PILImage.Image]: ...


class SeedImageTokenizer:
    """SEED-Tokenizer-2 behind MIO's image tokenizer protocol: PIL images <-> 32 codes of 8192.

    `decode` needs `decoder` (the unCLIP diffusion decoder); `embed` alone gives the 1024-d
    embedding that decoder is conditioned on."""

    def __init__(self, model: SeedTokenizerModel, decoder: EmbeddingDecoder | None = None):
        self.model = model.eval().requires_grad_(False)
        self.config = model.config
        self.decoder = decoder
        self.codebook_size = self.config.codebook_size
        self.tokens_per_image = self.config.num_query_tokens
        self.image_size = self.config.image_size
        self.image_features_dim = self.config.image_features_dim

    @property
    def device(self) -> torch.device:
        return self.model.query_tokens.device

    @property
    def can_decode(self) -> bool:
        """Whether `decode` can make pictures (an unCLIP decoder was given)."""
        return self.decoder is not None

    def to(self, device: str | torch.device) -> SeedImageTokenizer:
        """Move the model (not the decoder) to `device`; returns self."""
        self.model.to(device)
        return self

    def preprocess(self, images: Sequence[PILImage.Image]) -> torch.Tensor:
        """PIL images of any mode -> normalized pixels [N, 3, S, S] as SEED's transform makes
        them: RGB, S x S bicubic resize (no crop), [0, 1], CLIP mean/std."""
        side = self.image_size
        pixels = [np.asarray(to_rgb(im).resize((side, side), PILImage.Resampling.BICUBIC), dtype=np.uint8) for im in images]
        x = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float().div(255)
        mean = torch.tensor(self.config.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.config.image_std).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def encode(self, images: Sequence[PILImage.Image], batch_size: int = 16) -> torch.Tensor:
        """Images -> LongTensor [N, tokens_per_image] of codes in [0, codebook_size), on the CPU."""
        if isinstance(images, PILImage.Image):
            raise ValueError("encode takes a list of PIL images, not one image")
        images = list(images)
        if not all(isinstance(im, PILImage.Image) for im in images):
            raise ValueError("encode takes a list of PIL images")
        codes = [torch.zeros(0, self.tokens_per_image, dtype=torch.long)]
        for start in range(0, len(images), batch_size):
            pixels = self.preprocess(images[start:start + batch_size]).to(self.device)
            codes.append(self.model.encode_codes(pixels).long().cpu())
        return torch.cat(codes)

    def _check_codes(self, codes) -> torch.Tensor:
        codes = torch.as_tensor(codes)
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise ValueError(f"image codes must be integers, got {codes.dtype}")
        if codes.dim() == 1:
            codes = codes[None]
        if codes.dim() != 2 or codes.shape[1] != self.tokens_per_image:
            raise ValueError(f"image codes must be [N, {self.tokens_per_image}], got {list(codes.shape)}")
        outside = (codes < 0) | (codes >= self.codebook_size)
        if outside.any():
            raise ValueError(f"image code {codes[outside][0].item()} is outside the codebook [0, {self.codebook_size})")
        return codes.long()

    @torch.no_grad()
    def embed(self, codes) -> torch.Tensor:
        """Codes [N, tokens_per_image] (or one row) -> float image embeddings [N, image_features_dim],
        on the model's device (where the unCLIP decoder reads them)."""
        return self.model.embed_codes(self._check_codes(codes).to(self.device)).float()

    def decode(self, codes) -> list[PILImage.Image]:
        """Codes -> images, through the unCLIP decoder given at construction."""
        if self.decoder is None:
            raise ValueError(
                "decoding SEED codes to images needs the unCLIP decoder (the checkpoint's "
                "`stable-diffusion-2-1-unclip/` and the `diffusion` extra); `embed` gives the image embeddings"
            )
        return self.decoder.decode(self.embed(codes))

    @classmethod
    def load(cls, directory: str | Path, decoder: EmbeddingDecoder | None = None) -> SeedImageTokenizer:
        """Load `seed_quantizer.(safetensors|pt)` + `eva_vit_g.(safetensors|pth|pt)` and an
        optional `config.json` (without one the released sizes apply)."""
        return cls(load_model(directory), decoder=decoder)

    def save(self, directory: str | Path) -> None:
        """Write `seed_quantizer.safetensors`, `eva_vit_g.safetensors` (unprefixed keys) and
        `config.json`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        quantizer, vision = _split_state(self.model)
        save_file(quantizer, str(directory / QUANTIZER_FILES[0]))
        save_file(vision, str(directory / VISION_FILES[0]))
        _write_config(directory, self.config)


def _split_state(model: SeedTokenizerModel) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The model's tensors as the two released files hold them: (quantizer, unprefixed vision)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    vision = {k[len(VISION_PREFIX):]: v for k, v in state.items() if k.startswith(VISION_PREFIX)}
    quantizer = {k: v for k, v in state.items() if not k.startswith(VISION_PREFIX)}
    return quantizer, vision


def _write_config(directory: Path, cfg: SeedTokenizerConfig) -> None:
    meta = {"type": TOKENIZER_TYPE, "config": dataclasses.asdict(cfg)}
    (directory / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")


# ----------------------------------------------------------------------------- tiny replicas

TINY_CONFIG = SeedTokenizerConfig(
    image_size=28, patch_size=14, vision_width=32, vision_depth=2, vision_heads=2,
    qformer_hidden=32, qformer_layers=2, qformer_heads=2, qformer_intermediate=64, num_query_tokens=8,
    codebook_size=64, codebook_dim=8, decode_depth=1, decoder_heads=2, image_down_dims=(16, 8, 4),
    image_features_dim=16,
)
"""Sizes of the default tiny replica: every part of the released model, a few thousand weights."""

# BERT's `position_ids` buffer length; the released Q-Former carries it (SEED ignores it).
_BERT_MAX_POSITIONS = 512


def write_tiny_replica(directory: str | Path, config: SeedTokenizerConfig | None = None, seed: int = 0,
                       pickle_format: bool = True) -> Path:
    """Write a random-weight SEED-Tokenizer-2 directory in the released layout at tiny sizes
    (`TINY_CONFIG` unless `config`), plus the `config.json` those sizes need.

    With `pickle_format`, as the release: plain state_dicts `seed_quantizer.pt` and
    `eva_vit_g.pth` (unprefixed, with the tower's one extra block and the Q-Former's
    `position_ids` buffer that the release carries and SEED reads past). Otherwise what
    `SeedImageTokenizer.save` writes (safetensors). Weights are drawn at scales that make
    different images give different codes. Returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = config or TINY_CONFIG
    generator = torch.Generator().manual_seed(seed)
    model = SeedTokenizerModel(cfg)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(_random_like(name, param, generator))
    if not pickle_format:
        SeedImageTokenizer(model).save(directory)
        return directory
    quantizer, vision = _split_state(model)
    extra = ViTBlock(cfg.vision_width, cfg.vision_heads, cfg.vision_mlp_ratio, cfg.vision_eps, split_bias=True)
    with torch.no_grad():
        for name, param in extra.named_parameters():
            vision[f"blocks.{cfg.vision_depth}.{name}"] = _random_like(name, param, generator)
    quantizer["Qformer.bert.embeddings.position_ids"] = torch.arange(_BERT_MAX_POSITIONS)[None]
    torch.save(quantizer, directory / QUANTIZER_FILES[1])
    torch.save(vision, directory / VISION_FILES[1])
    _write_config(directory, cfg)
    return directory


def _random_like(name: str, param: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(param.shape, generator=generator)
    if name.endswith("embedding.weight"):
        return noise * 0.5  # codebook rows on the scale of the encoder's outputs
    if param.dim() >= 2 and name.endswith("weight"):
        return noise / param[0].numel() ** 0.5  # fan-in scaling keeps activations O(1)
    if param.dim() == 1 and ("norm" in name.lower() or "ln_" in name):
        return 1 + 0.1 * noise if name.endswith("weight") else 0.1 * noise
    return (0.5 if param.dim() == 3 else 0.1) * noise  # tokens / position embeddings; biases
