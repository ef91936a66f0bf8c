"""The embedded image tokenizer: SEED-Tokenizer's design, small enough to train on a CPU.

SEED-Tokenizer turns an image into 32 discrete codes with a ViT, a *causal* Q-Former and a
vector quantizer, and back to pixels with a decoder. This module keeps that shape:

    image -> conv stem (stride-2 convs: one feature vector per image patch)
          -> transformer encoder over the patches         (patch features)
          -> causal Q-Former: learned queries, causal self-attention among the queries,
             cross-attention to the patch features          (tokens_per_image vectors)
          -> vector quantizer (vector-quantize-pytorch; k-means init, dead-code expiry)
          -> codes
    codes -> code embeddings -> transformer decoder: one learned query per patch,
             cross-attending to the codes -> conv upsampling -> foreground colour,
             background colour and a matte -> image = background + matte * (foreground - background)
             (in training; decoding thresholds the matte, see `hard_matte`)

Three departures from SEED, all to make a CPU-sized model learn quickly: a convolutional
stem and upsampler; a fixed Gaussian locality prior added to the cross-attention logits
(`locality_bias`: query i starts out looking at its own region of the image, output patch j
at the codes of its region); and the matted output, whose matte training fits to the
image's foreground with a classification loss, which draws sharp object edges far sooner
than pixel MSE alone (see `image_train.py` and `configs/tokenizer/image_default.toml`).

The causal Q-Former matters for MIO: code i depends only on queries <= i, so the left-to-
right order the language model generates codes in is the order they were made in.

For the toy world's scenes the default goes one step further from SEED, towards codes a
small language model can write from a caption: `share_regions` encodes each cell of the
scenes' grid alone with the same weights, and `slot_codebooks` gives each of a cell's code
slots a small codebook of its own whose code a classifier picks (`SlotQuantizer`), trained
to name one attribute of the cell's object (`slot_attributes` in `mio.train.image_tokenizer`).
SEED's codes are semantic because they are aligned with CLIP's text space; these are
semantic because they are the scene's known content. The decoder then draws the canonical
render of what the codes name. Without `slot_codebooks` codes are vector-quantized.

`EmbeddedImageTokenizer` wraps the model behind the tokenizer protocol
(`mio.tokenizers.base.ImageTokenizer`) and saves/loads a directory with `config.json`
(`"type": "mio-image"`) and `model.safetensors`. Training lives in `image_train.py`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage
from safetensors.torch import load_model, save_model
from torch import nn
from vector_quantize_pytorch import VectorQuantize

from mio.config import load as load_config
from mio.media.image import to_rgb

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_TYPE = "mio-image"
CODE_ORDERS = ("region", "slot")
_MAX_8BIT = 255.0
# Decoder output channels per pixel: foreground RGB, background RGB, matte logit.
DECODER_CHANNELS = 7


@dataclass(frozen=True)
class ImageTokenizerConfig:
    """Architecture of the embedded image tokenizer. The defaults are the embedded preset
    (64x64 scenes, 32 codes per image as in the paper, a 1024-code codebook)."""

    image_size: int = 64
    """Side of the square input and output images, in pixels."""
    conv_channels: tuple[int, ...] = (32, 64, 128)
    """Channels of the stride-2 conv stem stages (mirrored by the upsampler); a patch is
    2**len(conv_channels) pixels on a side."""
    width: int = 128
    """Hidden size of the encoder, Q-Former and decoder."""
    heads: int = 4
    """Attention heads in every transformer layer."""
    encoder_layers: int = 3
    """Transformer layers over the image patches."""
    qformer_layers: int = 2
    """Causal Q-Former layers (causal self-attention over queries + cross-attention to patches)."""
    decoder_layers: int = 3
    """Transformer layers of the pixel decoder, over the patch grid the codes are mapped to."""
    tokens_per_image: int = 32
    """Discrete codes per image (learned Q-Former queries). The paper uses 32."""
    locality: float = 0.5
    """Width (in patches, relative to a query's share of the grid) of the attention prior that
    points query i at its own region of the image and each output patch at the codes of its
    region (0: no prior). The prior is what makes this train in minutes; attention can
    still look elsewhere."""
    query_regions: tuple[int, int] = (1, 1)
    """Rows and columns of equal image regions the queries' home points are shared out over
    (see `locality_bias`); (1, 1): the queries tile the whole image. Matching a known layout
    of the images' content (the toy world's 3x3 grid) gives each region's content its own
    codes."""
    share_regions: bool = False
    """Encode every region (`query_regions`) on its own with the same weights: the image is
    resampled so that regions are whole patches, each region's patches go through the stem,
    encoder and Q-Former separately, with the same queries. A region's codes then depend on
    that region's pixels only, and the same content gets the same codes in every region, as
    a convolutional tokenizer's codes do: a language model learns one mapping from words to
    codes instead of one per region. Needs `tokens_per_image` divisible by the number of
    regions. The decoder still reads all codes."""
    codebook_size: int = 1024
    """Number of distinct codes. The paper's SEED tokenizer has 8192."""
    slot_codebooks: tuple[int, ...] = ()
    """With `share_regions`: a codebook of its own for each of a region's code slots, of
    these sizes (one per slot), the codes of slot k numbered after those of slots < k, so
    that `codebook_size` is their sum; a slot's code is chosen by a classifier
    (`SlotQuantizer`), not by the vector quantizer. Small codebooks, one per slot, let each
    slot name one attribute of a region's content (`slot_attributes` in
    `mio.train.image_tokenizer`), so that codes compose: a language model that wrote "red"
    for circles writes the same colour code for a triangle. Empty: one vector-quantized
    codebook for every position."""
    code_order: str = "region"
    """The order of an image's codes in the token stream: `region`, each region's slots
    together (region 0's slots, then region 1's, ...), or, with `slot_codebooks`, `slot`:
    every region's slot-0 code, then every region's slot-1 code, and so on. In region order
    a colour code is followed by its own object's shape code, so a language model learns the
    colour-to-shape bigrams of its training pictures and never writes a combination it has
    not seen; in slot order the neighbour of a shape code is the next region's shape code."""
    codebook_dim: int = 32
    """Dimension codes are looked up in (features are projected width -> codebook_dim and back)."""
    codebook_decay: float = 0.9
    """EMA decay of the codebook update."""
    commitment_weight: float = 0.25
    """Weight of the commitment loss pulling encoder outputs to their codes."""
    kmeans_init: bool = True
    """Initialise the codebook with k-means on the first training batch."""
    dead_code_threshold: float = 1.0
    """Codes whose EMA usage count falls below this are replaced by batch vectors (0: off)."""
    hard_matte: bool = True
    """Decode with a thresholded matte: every pixel is the decoder's foreground or background
    colour, never the soft blend used in training (whose half-transparent fringes round
    small shapes' corners and shift their colours; measurement: docs/LOG.md, 2026-12-01)."""

    def validate(self) -> None:
        if not self.conv_channels:
            raise ValueError("conv_channels needs at least one stage")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of the patch size {self.patch_size}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        for name in ("tokens_per_image", "codebook_size", "codebook_dim", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if min(self.conv_channels) < 1:
            raise ValueError("conv_channels must be positive")
        if self.locality < 0:
            raise ValueError("locality must be >= 0")
        if len(self.query_regions) != 2 or min(self.query_regions) < 1:
            raise ValueError(f"query_regions must be two positive numbers (rows, cols), got {list(self.query_regions)}")
        if self.query_regions[0] * self.query_regions[1] > self.tokens_per_image:
            raise ValueError(f"query_regions {list(self.query_regions)} has more regions than the "
                             f"{self.tokens_per_image} tokens_per_image")
        if self.share_regions and self.query_regions[0] != self.query_regions[1]:
            raise ValueError(f"share_regions needs square query_regions, got {list(self.query_regions)}")
        if self.share_regions and self.tokens_per_image % self.num_regions:
            raise ValueError(f"share_regions needs tokens_per_image ({self.tokens_per_image}) divisible by the "
                             f"{self.num_regions} query_regions")
        if self.slot_codebooks:
            if not self.share_regions:
                raise ValueError("slot_codebooks needs share_regions (slots are the codes of one region)")
            if len(self.slot_codebooks) != self.tokens_per_image // self.num_regions:
                raise ValueError(f"slot_codebooks has {len(self.slot_codebooks)} sizes for "
                                 f"{self.tokens_per_image // self.num_regions} codes per region")
            if min(self.slot_codebooks) < 1 or sum(self.slot_codebooks) != self.codebook_size:
                raise ValueError(f"slot_codebooks {list(self.slot_codebooks)} must be positive and add up to "
                                 f"codebook_size {self.codebook_size}")
        if self.code_order not in CODE_ORDERS:
            raise ValueError(f"code_order must be one of {', '.join(CODE_ORDERS)}, got {self.code_order!r}")
        if self.code_order == "slot" and not self.slot_codebooks:
            raise ValueError("code_order 'slot' needs slot_codebooks")

    @property
    def patch_size(self) -> int:
        return 2 ** len(self.conv_channels)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_regions(self) -> int:
        return self.query_regions[0] * self.query_regions[1]

    @property
    def region_patches(self) -> tuple[int, int]:
        """Patch rows and columns of one region when `share_regions` encodes regions apart
        (the image is resampled to whole patches per region)."""
        side = self.image_size // self.patch_size
        return math.ceil(side / self.query_regions[0]), math.ceil(side / self.query_regions[1])


def _transformer_layer(cfg: ImageTokenizerConfig, cross: bool) -> nn.Module:
    kind = nn.TransformerDecoderLayer if cross else nn.TransformerEncoderLayer
    return kind(cfg.width, cfg.heads, 4 * cfg.width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True)


def _conv_norm(channels: int) -> nn.Module:
    """GroupNorm for the conv stages: with it they train stably at a high learning rate
    (the alternatives tried: docs/LOG.md, 2026-11-23)."""
    return nn.GroupNorm(math.gcd(8, channels), channels)


def locality_bias(tokens: int, grid: int, width: float, regions: tuple[int, int] = (1, 1)) -> torch.Tensor:
    """Additive attention bias [tokens, grid*grid]: query i gets a home point on the image
    and a Gaussian log-weight -d^2 / (2 sigma^2) over patch centres, sigma = `width` x the side
    of the query's tile in patches. The image is cut into `regions` (rows, cols) equal
    regions; queries are shared out over them in raster order (the first regions get one more
    when they do not divide evenly) and tile their region in raster order, rows x cols as
    square as possible. Codes therefore come out roughly in raster order, like a raster
    tokenizer's, while the causal Q-Former still mixes them. `width` 0 gives no bias."""
    if width == 0:
        return torch.zeros(tokens, grid * grid)
    region_rows, region_cols = regions
    n_regions = region_rows * region_cols
    region_h, region_w = grid / region_rows, grid / region_cols
    home_y, home_x, sigma = [], [], []
    for region in range(n_regions):
        n = tokens // n_regions + (region < tokens % n_regions)
        rows = max(d for d in range(1, int(math.isqrt(n)) + 1) if n % d == 0)
        cols = n // rows
        tile_h, tile_w = region_h / rows, region_w / cols
        top, left = (region // region_cols) * region_h, (region % region_cols) * region_w
        for q in range(n):
            home_y.append(top + (q // cols + 0.5) * tile_h - 0.5)
            home_x.append(left + (q % cols + 0.5) * tile_w - 0.5)
            sigma.append(width * math.sqrt(tile_h * tile_w))
    p = torch.arange(grid * grid)
    py, px = (p // grid).float(), (p % grid).float()
    dist2 = (torch.tensor(home_y)[:, None] - py[None]) ** 2 + (torch.tensor(home_x)[:, None] - px[None]) ** 2
    return -dist2 / (2 * torch.tensor(sigma)[:, None] ** 2)


class SlotQuantizer(nn.Module):
    """A small codebook whose code is chosen by a linear classifier, not by nearest neighbour:
    code = argmax of the logits, its vector a learned embedding, gradients through the
    softmax (straight-through). Trained with a class target (`slot_attributes`) each code is
    one value of an attribute; nearest-neighbour codebooks this small collapsed to a few codes
    (docs/LOG.md, 2026-12-04)."""

    def __init__(self, dim: int, size: int):
        super().__init__()
        self.classify = nn.Linear(dim, size)
        self.embedding = nn.Parameter(torch.randn(size, dim))

    @property
    def codebook(self) -> torch.Tensor:
        return self.embedding

    def forward(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Vectors [..., D] -> (code vectors [..., D], codes [...], logits [..., size])."""
        logits = self.classify(vectors)
        codes = logits.argmax(dim=-1)
        probs = logits.softmax(dim=-1)
        hard = nn.functional.one_hot(codes, probs.shape[-1]).to(probs.dtype)
        return (hard + probs - probs.detach()) @ self.embedding, codes, logits


class ImageTokenizerModel(nn.Module):
    """Encoder, causal Q-Former, vector quantizer and pixel decoder (see module docstring).

    Images are float tensors [N, 3, H, W] in [-1, 1]."""

    def __init__(self, cfg: ImageTokenizerConfig):
        super().__init__()
        self.cfg = cfg
        w, n_patch, n_tok = cfg.width, cfg.num_patches, cfg.tokens_per_image
        # Encoder over patches: a conv stem (each stage halves the resolution), then a ViT.
        stem, c_in = [], 3
        for c in cfg.conv_channels:
            stem += [nn.Conv2d(c_in, c, kernel_size=4, stride=2, padding=1), _conv_norm(c), nn.GELU()]
            c_in = c
        self.stem = nn.Sequential(*stem, nn.Conv2d(c_in, w, kernel_size=1))
        side = cfg.image_size // cfg.patch_size
        bias = locality_bias(n_tok, side, cfg.locality, cfg.query_regions)
        # With shared regions the encoder sees one region at a time: its patches, its queries.
        rows, cols = cfg.region_patches
        enc_patches, enc_queries = (rows * cols, n_tok // cfg.num_regions) if cfg.share_regions else (n_patch, n_tok)
        enc_bias = locality_bias(enc_queries, rows, cfg.locality) if cfg.share_regions else bias
        self.patch_pos = nn.Parameter(torch.randn(1, enc_patches, w) * 0.02)
        self.encoder = nn.TransformerEncoder(_transformer_layer(cfg, False), cfg.encoder_layers, enable_nested_tensor=False)
        self.encoder_norm = nn.LayerNorm(w)
        # Causal Q-Former.
        self.queries = nn.Parameter(torch.randn(1, enc_queries, w) * 0.02)
        self.qformer = nn.TransformerDecoder(_transformer_layer(cfg, True), cfg.qformer_layers)
        self.register_buffer("causal_mask", nn.Transformer.generate_square_subsequent_mask(enc_queries), persistent=False)
        self.register_buffer("query_bias", enc_bias, persistent=False)  # queries -> patches
        self.register_buffer("patch_bias", bias.T.contiguous(), persistent=False)  # patches -> codes
        self.qformer_norm = nn.LayerNorm(w)
        # Vector quantizer in a low-dimensional code space (small codes are used more evenly).
        # The projection lives outside the quantizer so that training can bypass quantization
        # during a continuous warm-up and still use the same layers afterwards.
        self.to_code = nn.Linear(w, cfg.codebook_dim)
        if cfg.slot_codebooks:
            self.quantizer = nn.ModuleList(SlotQuantizer(cfg.codebook_dim, size) for size in cfg.slot_codebooks)
            self.register_buffer("slot_offsets", torch.tensor([0, *itertools.accumulate(cfg.slot_codebooks)][:-1]),
                                 persistent=False)
        else:
            self.quantizer = VectorQuantize(dim=cfg.codebook_dim, codebook_size=cfg.codebook_size,
                                            decay=cfg.codebook_decay, commitment_weight=cfg.commitment_weight,
                                            kmeans_init=cfg.kmeans_init, threshold_ema_dead_code=cfg.dead_code_threshold)
        # Pixel decoder: one learned query per patch cross-attends to the codes (which slot a
        # code sits in matters, so codes get a position embedding), then transposed convs.
        self.code_pos = nn.Parameter(torch.randn(1, n_tok, w) * 0.02)
        self.from_code = nn.Linear(cfg.codebook_dim, w)
        self.pixel_queries = nn.Parameter(torch.randn(1, n_patch, w) * 0.02)
        self.decoder = nn.TransformerDecoder(_transformer_layer(cfg, True), cfg.decoder_layers)
        self.decoder_norm = nn.LayerNorm(w)
        channels = list(reversed(cfg.conv_channels))
        up: list[nn.Module] = [nn.Conv2d(w, channels[0], kernel_size=1)]
        for c_in, c_out in zip(channels, channels[1:]):
            up += [_conv_norm(c_in), nn.GELU(), nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1)]
        # The last doubling is a sub-pixel conv (each half-resolution pixel predicts its 2x2
        # output pixels), so nothing runs at full resolution: that was most of a step's time.
        up += [_conv_norm(channels[-1]), nn.GELU(),
               nn.Conv2d(channels[-1], DECODER_CHANNELS * 4, kernel_size=3, padding=1), nn.PixelShuffle(2)]
        self.upsample = nn.Sequential(*up)

    def decoder_parameters(self) -> list[nn.Parameter]:
        """The parameters of the pixel decoder (codes -> pixels), for decoder fine-tuning."""
        modules = (self.from_code, self.decoder, self.decoder_norm, self.upsample)
        return [self.code_pos, self.pixel_queries] + [p for m in modules for p in m.parameters()]

    def encode_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels -> continuous query outputs [N, tokens_per_image, width] (before VQ)."""
        n = pixels.shape[0]
        if self.cfg.share_regions:
            pixels = self._regions(pixels)
        patches = self.stem(pixels).flatten(2).transpose(1, 2) + self.patch_pos
        memory = self.encoder_norm(self.encoder(patches))
        queries = self.queries.expand(pixels.shape[0], -1, -1)
        out = self.qformer(queries, memory, tgt_mask=self.causal_mask, memory_mask=self.query_bias, tgt_is_causal=True)
        return self.qformer_norm(out).reshape(n, self.cfg.tokens_per_image, -1)

    def _regions(self, pixels: torch.Tensor) -> torch.Tensor:
        """Images [N, 3, S, S] -> their regions [N * regions, 3, h, w] in raster order, resampled
        so that every region is whole patches (64 px in 3x3 regions of 8-px patches: 72 px)."""
        cfg, n = self.cfg, pixels.shape[0]
        (region_rows, region_cols), (rows, cols) = cfg.query_regions, cfg.region_patches
        h, w = rows * cfg.patch_size, cols * cfg.patch_size
        size = (region_rows * h, region_cols * w)
        if tuple(pixels.shape[-2:]) != size:
            pixels = nn.functional.interpolate(pixels, size=size, mode="bilinear", align_corners=False)
        pixels = pixels.reshape(n, 3, region_rows, h, region_cols, w).permute(0, 2, 4, 1, 3, 5)
        return pixels.reshape(n * region_rows * region_cols, 3, h, w)

    def quantize(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features -> (quantized code vectors [N, L, codebook_dim], codes [N, L], commitment loss)."""
        return self._quantize_vectors(self.to_code(features))

    def _quantize_vectors(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Code-space vectors [N, L, codebook_dim] -> (quantized, codes, commitment loss)."""
        if isinstance(self.quantizer, VectorQuantize):
            quantized, codes, commit_loss = self.quantizer(vectors)
            return quantized, codes, commit_loss.sum()
        quantized, codes, _ = self.quantize_slots(vectors)
        return quantized, codes, vectors.new_zeros(())

    def quantize_slots(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """With `slot_codebooks`: code-space vectors [N, L, D] -> (quantized [N, L, D], codes
        [N, L] numbered across slots, each slot's logits [N, regions, slot codebook size])."""
        slots = vectors.unflatten(1, (-1, len(self.quantizer)))  # [N, regions, slots, D]
        outs = [q(slots[:, :, k]) for k, q in enumerate(self.quantizer)]
        quantized = torch.stack([o[0] for o in outs], dim=2).flatten(1, 2)
        codes = torch.stack([o[1] + self.slot_offsets[k] for k, o in enumerate(outs)], dim=2).flatten(1, 2)
        return quantized, codes, [o[2] for o in outs]

    @property
    def codebook(self) -> torch.Tensor:
        """All code vectors [codebook_size, codebook_dim], in code order (with `slot_codebooks`
        the slots' codebooks one after another)."""
        if isinstance(self.quantizer, VectorQuantize):
            return self.quantizer.codebook
        return torch.cat([q.codebook for q in self.quantizer])

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [N, L] -> code vectors [N, L, codebook_dim] (what `quantize` returns for them).
        With `slot_codebooks` a code is looked up in the codebook it belongs to, whichever
        slot it sits in."""
        if isinstance(self.quantizer, VectorQuantize):
            return self.quantizer.get_output_from_indices(codes)
        return self.codebook[codes]

    def decoder_outputs(self, quantized: torch.Tensor) -> torch.Tensor:
        """Code vectors [N, L, codebook_dim] -> the decoder's maps [N, 7, H, W]: foreground
        RGB, background RGB (both in [-1, 1], unclamped) and the matte logit."""
        cfg, n = self.cfg, quantized.shape[0]
        memory = self.from_code(quantized) + self.code_pos
        queries = self.pixel_queries.expand(n, -1, -1)
        grid = self.decoder_norm(self.decoder(queries, memory, memory_mask=self.patch_bias))
        side = cfg.image_size // cfg.patch_size
        return self.upsample(grid.transpose(1, 2).reshape(n, cfg.width, side, side))

    def decode_with_matte(self, quantized: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Code vectors -> (pixels [N, 3, H, W] in [-1, 1] (unclamped), matte logits
        [N, 1, H, W]) for training. The decoder paints a foreground colour over a background
        colour through a sigmoid matte: colours can stay smooth, and the edges of objects are
        the matte's, which a classification loss makes sharp (see `image_train`)."""
        out = self.decoder_outputs(quantized)
        foreground, background, matte_logits = out[:, :3], out[:, 3:6], out[:, 6:]
        return background + torch.sigmoid(matte_logits) * (foreground - background), matte_logits

    def decode_quantized(self, quantized: torch.Tensor) -> torch.Tensor:
        """Code vectors [N, L, codebook_dim] -> pixels [N, 3, H, W] in [-1, 1] (unclamped).
        With `hard_matte` each pixel takes the foreground or the background colour, whichever
        side of 0.5 its matte is on, instead of the training-time blend."""
        if not self.cfg.hard_matte:
            return self.decode_with_matte(quantized)[0]
        out = self.decoder_outputs(quantized)
        return torch.where(out[:, 6:] > 0, out[:, :3], out[:, 3:6])

    def forward(self, pixels: torch.Tensor, quantize: bool = True) -> dict[str, torch.Tensor | None]:
        """Training pass: reconstruction, matte logits, codes, the code-space vectors before
        (`prequantized`) and after quantization, and the VQ loss.

        `quantize=False` skips the quantizer (codes None): used for a continuous warm-up, so
        that the features differ between images before k-means initialises the codebook on
        them (initialised on the near-identical features of a fresh model, every image gets
        the same codes and the codebook collapses)."""
        prequantized = self.to_code(self.encode_features(pixels))
        if not quantize:
            reconstruction, matte_logits = self.decode_with_matte(prequantized)
            return {"reconstruction": reconstruction, "matte_logits": matte_logits, "codes": None,
                    "prequantized": prequantized, "quantized": prequantized, "commit_loss": prequantized.new_zeros(()),
                    "slot_logits": None}
        slot_logits = None
        if isinstance(self.quantizer, VectorQuantize):
            quantized, codes, commit_loss = self._quantize_vectors(prequantized)
        else:
            quantized, codes, slot_logits = self.quantize_slots(prequantized)
            commit_loss = prequantized.new_zeros(())
        reconstruction, matte_logits = self.decode_with_matte(quantized)
        return {"reconstruction": reconstruction, "matte_logits": matte_logits, "codes": codes,
                "prequantized": prequantized, "quantized": quantized, "commit_loss": commit_loss,
                "slot_logits": slot_logits}


def images_to_tensor(images: list[PILImage.Image], image_size: int) -> torch.Tensor:
    """PIL images (any mode and size) -> float tensor [N, 3, S, S] in [-1, 1]."""
    arrays = []
    for image in images:
        rgb = to_rgb(image)
        if rgb.size != (image_size, image_size):
            rgb = rgb.resize((image_size, image_size), PILImage.Resampling.BICUBIC)
        arrays.append(np.asarray(rgb, dtype=np.float32))
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return batch / (_MAX_8BIT / 2) - 1.0


def tensor_to_images(pixels: torch.Tensor) -> list[PILImage.Image]:
    """Float tensor [N, 3, H, W] in [-1, 1] -> RGB PIL images."""
    array = ((pixels.clamp(-1, 1) + 1) * (_MAX_8BIT / 2)).round().to(torch.uint8)
    return [PILImage.fromarray(a) for a in array.permute(0, 2, 3, 1).cpu().numpy()]


class EmbeddedImageTokenizer:
    """The tokenizer protocol over `ImageTokenizerModel`: PIL images <-> LongTensor codes."""

    def __init__(self, config: ImageTokenizerConfig, model: ImageTokenizerModel | None = None,
                 device: str | torch.device = "cpu", batch_size: int = 64):
        self.config = config
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.model = (model or ImageTokenizerModel(config)).to(self.device).eval()

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def tokens_per_image(self) -> int:
        return self.config.tokens_per_image

    @property
    def stream_order(self) -> torch.Tensor:
        """Token position -> the model's code position (`ImageTokenizerConfig.code_order`)."""
        positions = torch.arange(self.tokens_per_image)
        if self.config.code_order == "slot":
            return positions.reshape(-1, len(self.config.slot_codebooks)).T.flatten()
        return positions

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @torch.no_grad()
    def encode(self, images: list[PILImage.Image]) -> torch.Tensor:
        """Images (any mode, any size; resized to `image_size`) -> LongTensor [N, tokens_per_image]."""
        if not images:
            return torch.zeros(0, self.tokens_per_image, dtype=torch.long)
        out = []
        for start in range(0, len(images), self.batch_size):
            pixels = images_to_tensor(images[start : start + self.batch_size], self.image_size).to(self.device)
            _, codes, _ = self.model.quantize(self.model.encode_features(pixels))
            out.append(codes.long().cpu()[:, self.stream_order])
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> list[PILImage.Image]:
        """LongTensor [N, tokens_per_image] (or one row [tokens_per_image]) -> RGB images."""
        codes = torch.as_tensor(codes)
        if codes.dim() == 1:
            codes = codes.unsqueeze(0)
        if codes.dim() != 2 or codes.shape[1] != self.tokens_per_image:
            raise ValueError(f"image codes must have shape [N, {self.tokens_per_image}], got {list(codes.shape)}")
        if codes.is_floating_point():
            raise ValueError("image codes must be integers")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            bad = codes[(codes < 0) | (codes >= self.codebook_size)][0].item()
            raise ValueError(f"image code {bad} is outside the codebook [0, {self.codebook_size})")
        images = []
        for start in range(0, codes.shape[0], self.batch_size):
            chunk = codes[start : start + self.batch_size, self.stream_order.argsort()].to(self.device)
            images.extend(tensor_to_images(self.model.decode_quantized(self.model.embed_codes(chunk))))
        return images

    def save(self, directory: str | Path) -> None:
        """Write `config.json` and `model.safetensors` to `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"type": TOKENIZER_TYPE, "config": dataclasses.asdict(self.config)}
        (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        save_model(self.model, str(directory / WEIGHTS_NAME))

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> EmbeddedImageTokenizer:
        """Read a directory written by `save`."""
        directory = Path(directory)
        config_path = directory / CONFIG_NAME
        if not config_path.is_file():
            raise FileNotFoundError(f"no {CONFIG_NAME} in {directory}")
        meta = json.loads(config_path.read_text())
        if meta.get("type") != TOKENIZER_TYPE:
            raise ValueError(f"{config_path}: type is {meta.get('type')!r}, expected {TOKENIZER_TYPE!r}")
        config = load_config(ImageTokenizerConfig, meta["config"])
        model = ImageTokenizerModel(config)
        load_model(model, str(directory / WEIGHTS_NAME), device="cpu")
        return cls(config, model, device=device)
