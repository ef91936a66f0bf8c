"""Train and evaluate the embedded image tokenizer (`mio tokenizer train image CONFIG`).

The objective is reconstruction + the quantizer's commitment loss + a caption loss: a small
head predicts the bag of caption words from the quantized codes, so the codes carry what the
language model will talk about (colour, shape, size, place), not only pixels. The caption
head is a training aid and is not saved.

Reconstruction is pixel MSE weighted towards the foreground (pixels far from the image's
background, the median border colour, and a margin around them), plus a binary
cross-entropy between the decoder's matte and that foreground mask. Plain MSE on these
scenes is dominated by the uniform background (objects are a few percent of the pixels)
and gives blurred, rounded, colour-shifted objects for thousands of steps.

After the joint training, `decoder_steps` optionally train the decoder alone on the frozen
encoder's codes (`finetune_decoder`), so that it learns to draw the exact codes it will be
given rather than the moving targets of joint training.

A language model has to write these codes from a caption, which names each object and
nothing else. On procedural scenes three options keep the codes to what a caption says:
`canonical_target` trains the decoder to draw each scene's canonical render (fixed
background, no jitter; `mio.toyworld.scenes.canonical`) whatever tint and jitter its input
has; `invariance_weight` pulls an input's code-space features towards the code its
canonical render gets, so that vector-quantized codes themselves, not only the decoded
pixels, drop the nuisance; and `slot_attributes` (with the model's `slot_codebooks`)
trains each code slot of a grid cell to name one attribute of the cell's object, so that
codes compose the way the caption's words do.

Data is a folder of images, a JSONL manifest (`{"image": path, "caption": str}` per line,
paths relative to the manifest), or, with no data path, freshly rendered procedural scenes
(`mio.toyworld.scenes`), whose known content lets the evaluation also score reconstructions
with the pixel judge. Evaluation on held-out images reports PSNR, SSIM, codebook usage and
perplexity, encode/decode throughput and, for scenes, judge accuracy and three probes of how
writable the codes are: `consistency` (same scene, other nuisance -> same codes?),
`codes_changed_per_object_change` (one object replaced -> how many codes change?) and the
per-position cell information (does each code position describe one grid cell?);
`metrics.json` is written next to the weights.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image as PILImage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torch import nn
from tqdm import tqdm

from mio.config import load as load_config
from mio.config import to_dict
from mio.judges import image as image_judge
from mio.media.image import DEFAULT_MAX_PIXELS, ImageFileError, open_image
from mio.tokenizers.image import EmbeddedImageTokenizer, ImageTokenizerConfig, ImageTokenizerModel, images_to_tensor
from mio.toyworld.scenes import (
    COLORS,
    GRID,
    SHAPES,
    SIZES,
    Scene,
    SceneObject,
    canonical,
    caption,
    render,
    sample_scenes,
    with_nuisance,
)
from mio.train.schedule import cosine_schedule

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
METRICS_NAME = "metrics.json"
TRAIN_CONFIG_NAME = "train_config.json"
_WORD = re.compile(r"[a-z]+")
# The cosine schedule ends at this fraction of the peak learning rate.
LR_FLOOR = 0.1


@dataclass(frozen=True)
class ImageTrainConfig:
    """How to train the embedded image tokenizer."""

    model: ImageTokenizerConfig = field(default_factory=ImageTokenizerConfig)
    """The tokenizer architecture."""
    data: str = ""
    """A folder of images or a JSONL manifest; empty: render `scenes` procedural scenes."""
    scenes: int = 8000
    """Training scenes to render when `data` is empty."""
    val_images: int = 256
    """Held-out images for evaluation (new scenes, or the tail of `data`)."""
    seed: int = 0
    """Seed for scenes, initialisation and batch order."""
    steps: int = 1000
    """Optimizer steps."""
    batch_size: int = 32
    """Images per step."""
    lr: float = 2e-3
    """Peak AdamW learning rate (linear warmup, cosine decay to 10%)."""
    warmup_steps: int = 50
    """Linear learning-rate warmup steps."""
    continuous_steps: int = 100
    """First steps train without quantization; the codebook is then k-means initialised on
    features that already tell images apart."""
    kmeans_images: int = 1024
    """Training images whose features initialise the codebook by k-means when quantization
    starts (one batch holds fewer vectors than there are codes); 0: the first quantized batch.
    Not used with `model.slot_codebooks`, whose codes are chosen by classifiers."""
    decoder_steps: int = 0
    """Steps after `steps` that train only the pixel decoder on the frozen encoder's codes
    (codebook fixed), so it learns to draw exactly the codes it will be given; these steps
    cost about half a full step."""
    decoder_lr: float = 1e-3
    """Peak learning rate of the decoder fine-tuning (cosine decay to 10%)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    grad_clip: float = 1.0
    """Gradient norm clip."""
    caption_weight: float = 0.1
    """Weight of the bag-of-caption-words loss on the quantized codes (0: off)."""
    caption_hidden: int = 256
    """Hidden size of the caption head."""
    foreground_weight: float = 5.0
    """Extra pixel-loss weight on the foreground and its margin (a pixel there weighs
    1 + this; 0: plain MSE)."""
    foreground_distance: float = 0.25
    """A pixel is foreground when its RGB distance to the image's background (the median
    border colour), in [-1, 1] pixel units, exceeds this."""
    foreground_dilation: int = 2
    """Pixels this close to the foreground get its weight too, so that an object's edge weighs
    the same on both sides (weighting only the object pixels makes reconstructions grow them)."""
    matte_weight: float = 1.0
    """Weight of the binary cross-entropy between the decoder's matte and the foreground mask
    (0: the matte is learned through the pixel loss only)."""
    canonical_target: bool = False
    """Train the decoder to draw each scene's canonical render (fixed background, no jitter)
    from any render of it, so codes need not carry the nuisance. Needs procedural scenes
    (`data` empty): image files have no canonical render, and such a config is refused."""
    invariance_weight: float = 0.0
    """Weight of the loss pulling an input's code-space features (before quantization) to the
    code vectors its scene's canonical render gets (looked up without gradient or codebook
    update; see `canonical_codes`), so that a scene's codes do not depend on its nuisance
    (0: off). It starts with quantization: pulling renders together in a fresh encoder,
    whose features barely differ between images, collapses them all. Needs procedural scenes."""
    slot_attributes: tuple[str, ...] = ()
    """With `model.slot_codebooks` over the scenes' grid: the attribute of its cell's object
    ("shape", "color" or "size") that code slot k of every cell names. Slot k's codebook has
    code 0 for an empty cell and one code per value of its attribute, and its classifier is
    trained with cross-entropy to pick the code of the cell's content. Each slot's code then
    *is* that attribute: a caption's words map to codes one by one, so a colour-shape
    combination never drawn in training is still a combination of codes written before. This
    is SEED's semantic codes at toy scale: there CLIP supplies the meaning, here the scenes'
    known content. Empty: off. Needs procedural scenes."""
    slot_attribute_weight: float = 1.0
    """Weight of the slot classifiers' cross-entropy (mean over cells and slots)."""
    max_pixels: int = DEFAULT_MAX_PIXELS
    """Refuse image files with more pixels than this."""
    log_every: int = 50
    """Log losses every this many steps."""
    device: str = "cpu"
    """Torch device to train on."""
    out_dir: str = "runs/tokenizer/image"
    """Where the tokenizer directory is written (the CLI's --out overrides it)."""

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be positive")
        if self.decoder_steps < 0:
            raise ValueError("decoder_steps must be >= 0")
        if not self.data and self.scenes < 1:
            raise ValueError("with no data path, scenes must be positive")
        if self.invariance_weight < 0:
            raise ValueError("invariance_weight must be >= 0")
        if self.data and (self.canonical_target or self.invariance_weight):
            raise ValueError(f"canonical_target and invariance_weight need procedural scenes (data empty); "
                             f"the images in {self.data} have no canonical render")
        if self.slot_attributes:
            m = self.model
            if self.data:
                raise ValueError(f"slot_attributes needs procedural scenes (data empty); the images in {self.data} "
                                 "have no known objects")
            if not m.slot_codebooks or tuple(m.query_regions) != (GRID, GRID):
                raise ValueError(f"slot_attributes needs model.slot_codebooks over the scenes' {GRID}x{GRID} grid "
                                 f"(query_regions = [{GRID}, {GRID}])")
            unknown = sorted(set(self.slot_attributes) - set(ATTRIBUTE_VALUES))
            if unknown:
                raise ValueError(f"unknown slot_attributes {unknown}; known: {sorted(ATTRIBUTE_VALUES)}")
            sizes = [1 + len(ATTRIBUTE_VALUES[a]) for a in self.slot_attributes]
            if sizes != list(m.slot_codebooks):
                raise ValueError(f"slot_attributes {list(self.slot_attributes)} need model.slot_codebooks = {sizes} "
                                 f"(each attribute's values and one for an empty cell), got {list(m.slot_codebooks)}")
        if self.slot_attribute_weight < 0:
            raise ValueError("slot_attribute_weight must be >= 0")
        if self.model.slot_codebooks and self.invariance_weight:
            raise ValueError("invariance_weight needs vector-quantized codes; with model.slot_codebooks codes are "
                             "classes (train them with slot_attributes to make them ignore the nuisance)")


@dataclass
class ImageSet:
    """Images with optional captions and, for rendered scenes, their ground truth."""

    images: list[PILImage.Image]
    captions: list[str | None]
    scenes: list[Scene] | None = None


def load_images(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageSet:
    """Read a folder of images (sorted by name, no captions) or a JSONL manifest of
    `{"image": path, "caption": str}` lines. Bad files raise `ImageFileError` naming them."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ImageFileError(f"{path}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return ImageSet([open_image(f, max_pixels) for f in files], [None] * len(files))
    if not path.is_file():
        raise FileNotFoundError(f"image data not found: {path}")
    images, captions = [], []
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ImageFileError(f"{path}:{line_no}: not valid JSON ({e})") from None
        if not isinstance(record, dict) or not isinstance(record.get("image"), str):
            raise ImageFileError(f"{path}:{line_no}: expected an object with an \"image\" path")
        text = record.get("caption")
        if text is not None and not isinstance(text, str):
            raise ImageFileError(f"{path}:{line_no}: \"caption\" must be a string")
        image_path = Path(record["image"])
        images.append(open_image(image_path if image_path.is_absolute() else path.parent / image_path, max_pixels))
        captions.append(text)
    if not images:
        raise ImageFileError(f"{path}: manifest has no images")
    return ImageSet(images, captions)


def render_scene_set(n: int, seed: int, image_size: int) -> ImageSet:
    """`n` procedural scenes with captions (phrasing varies with the seed) and ground truth."""
    scenes = sample_scenes(n, seed=seed)
    return ImageSet([render(s, image_size) for s in scenes], [caption(s, seed=seed + i) for i, s in enumerate(scenes)], scenes)


class CaptionHead(nn.Module):
    """Predicts which words a caption contains from an image's quantized codes."""

    def __init__(self, tokens: int, width: int, hidden: int, vocab_size: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(tokens * width, hidden), nn.GELU(), nn.Linear(hidden, vocab_size))

    def forward(self, quantized: torch.Tensor) -> torch.Tensor:
        return self.net(quantized)


def caption_targets(captions: list[str | None]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Word list, multi-hot targets [N, V] and a mask [N] of images that have a caption."""
    words = sorted({w for c in captions if c for w in _WORD.findall(c.lower())})
    index = {w: i for i, w in enumerate(words)}
    targets = torch.zeros(len(captions), len(words))
    for row, text in enumerate(captions):
        for w in _WORD.findall((text or "").lower()):
            targets[row, index[w]] = 1.0
    has_caption = torch.tensor([bool(c) for c in captions])
    return words, targets, has_caption


ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {"shape": SHAPES, "color": tuple(COLORS), "size": SIZES}
"""The values of each object attribute a code slot can be trained to name (`slot_attributes`)."""


def slot_attribute_targets(scenes: list[Scene], attributes: tuple[str, ...]) -> torch.Tensor:
    """Class targets [N, cells, slots]: for slot k of each grid cell, 0 if the cell is empty,
    else 1 + the index of the cell's object's value of `attributes[k]`."""
    targets = torch.zeros(len(scenes), GRID * GRID, len(attributes), dtype=torch.long)
    for row, scene in enumerate(scenes):
        for o in scene.objects:
            for k, name in enumerate(attributes):
                targets[row, o.row * GRID + o.col, k] = 1 + ATTRIBUTE_VALUES[name].index(getattr(o, name))
    return targets


def slot_attribute_loss(slot_logits: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each slot's classifier logits [N, cells, size] against the class
    targets [N, cells, slots] (`slot_attribute_targets`)."""
    return torch.stack([F.cross_entropy(logits.flatten(0, 1), targets[:, :, k].flatten())
                        for k, logits in enumerate(slot_logits)]).mean()


def canonical_renders(scenes: list[Scene], image_size: int) -> torch.Tensor:
    """The canonical renders (`mio.toyworld.scenes.canonical`) of `scenes` as a tensor [N, 3, S, S]."""
    return images_to_tensor([render(canonical(s), image_size) for s in scenes], image_size)


@torch.no_grad()
def canonical_codes(model: ImageTokenizerModel, pixels: torch.Tensor) -> torch.Tensor:
    """The code vectors [N, L, codebook_dim] the quantizer gives `pixels`, looked up directly:
    in training mode the quantizer would also update its codebook. An encoder pass without
    gradients costs about a third of a trained one."""
    features = model.to_code(model.encode_features(pixels))
    codebook = model.quantizer.codebook
    return codebook[torch.cdist(features.flatten(0, 1), codebook).argmin(dim=-1)].view_as(features)


def invariance_loss(features: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between `features` and `anchor` [N, L, D]: the quantizer's
    commitment loss, with another render's code as the target."""
    return F.mse_loss(features, anchor)


def foreground_mask(pixels: torch.Tensor, distance: float) -> torch.Tensor:
    """Float mask [N, 1, H, W] of the pixels of `pixels` [N, 3, H, W] whose RGB distance to
    their image's background, the median border colour, exceeds `distance`."""
    border = torch.cat([pixels[:, :, 0], pixels[:, :, -1], pixels[:, :, :, 0], pixels[:, :, :, -1]], dim=2)
    background = border.median(dim=2).values
    return ((pixels - background[:, :, None, None]).norm(dim=1, keepdim=True) > distance).float()


def reconstruction_losses(reconstruction: torch.Tensor, matte_logits: torch.Tensor, target: torch.Tensor,
                          cfg: ImageTrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(foreground-weighted pixel MSE, matte binary cross-entropy) of a decoded batch against
    its `target` images (see the module docstring)."""
    foreground = foreground_mask(target, cfg.foreground_distance)
    margin = cfg.foreground_dilation
    near = F.max_pool2d(foreground, 2 * margin + 1, stride=1, padding=margin) if margin else foreground
    weight = 1 + cfg.foreground_weight * near
    pixel = ((reconstruction - target).pow(2) * weight).sum() / (weight.sum() * target.shape[1])
    return pixel, F.binary_cross_entropy_with_logits(matte_logits, foreground)


@torch.no_grad()
def _init_codebook(model: ImageTokenizerModel, pixels: torch.Tensor, device: torch.device, chunk: int = 256) -> None:
    """Run the (not yet initialised) quantizer once on the features of `pixels`: it
    initialises its codebook by k-means on them."""
    features = [model.encode_features(pixels[i : i + chunk].to(device)) for i in range(0, len(pixels), chunk)]
    model.quantize(torch.cat(features))


def _update(loss: torch.Tensor, optimizer, scheduler, params: list, grad_clip: float) -> None:
    """One optimizer step on `loss`, gradients clipped to `grad_clip`."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    scheduler.step()


def train(cfg: ImageTrainConfig, train_set: ImageSet) -> EmbeddedImageTokenizer:
    """Train a tokenizer on `train_set` and return it (in eval mode)."""
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    pixels = images_to_tensor(train_set.images, cfg.model.image_size)
    canonical_pixels = None
    if cfg.canonical_target or cfg.invariance_weight:
        if train_set.scenes is None:
            raise ValueError("canonical_target and invariance_weight need a training set of procedural scenes")
        canonical_pixels = canonical_renders(train_set.scenes, cfg.model.image_size)
    target_pixels = canonical_pixels if cfg.canonical_target else pixels
    model = ImageTokenizerModel(cfg.model).to(device)
    words, targets, has_caption = caption_targets(train_set.captions)
    use_captions = cfg.caption_weight > 0 and bool(words) and bool(has_caption.any())
    head = None
    if use_captions:
        head = CaptionHead(cfg.model.tokens_per_image, cfg.model.codebook_dim, cfg.caption_hidden, len(words)).to(device)
    slot_targets = None
    if cfg.slot_attributes:
        if train_set.scenes is None:
            raise ValueError("slot_attributes needs a training set of procedural scenes")
        slot_targets = slot_attribute_targets(train_set.scenes, cfg.slot_attributes)
    params = list(model.parameters()) + (list(head.parameters()) if head else [])
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = cosine_schedule(optimizer, cfg.warmup_steps, cfg.steps, LR_FLOOR)
    generator = torch.Generator().manual_seed(cfg.seed)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("training image tokenizer: %d images, %.2fM parameters, %d steps of %d, caption words %d",
             len(pixels), n_params / 1e6, cfg.steps, cfg.batch_size, len(words) if use_captions else 0)
    model.train()
    progress = tqdm(range(cfg.steps), desc="image tokenizer", unit="step", mininterval=5.0)
    for step in progress:
        idx = torch.randint(len(pixels), (cfg.batch_size,), generator=generator)
        batch = pixels[idx].to(device)
        quantizing = step >= cfg.continuous_steps
        if step == cfg.continuous_steps and cfg.kmeans_images and not cfg.model.slot_codebooks:
            _init_codebook(model, pixels[torch.randperm(len(pixels), generator=generator)[: cfg.kmeans_images]], device)
        out = model(batch, quantize=quantizing)
        recon, matte = reconstruction_losses(out["reconstruction"], out["matte_logits"], target_pixels[idx].to(device), cfg)
        loss = recon + cfg.matte_weight * matte + out["commit_loss"]
        invariance = torch.zeros((), device=device)
        if cfg.invariance_weight and quantizing:
            anchor = canonical_codes(model, canonical_pixels[idx].to(device))
            invariance = invariance_loss(out["prequantized"], anchor)
            loss = loss + cfg.invariance_weight * invariance
        caption_loss = torch.zeros((), device=device)
        if head is not None:
            mask = has_caption[idx].to(device)
            if mask.any():
                logits = head(out["quantized"][mask])
                caption_loss = F.binary_cross_entropy_with_logits(logits, targets[idx][has_caption[idx]].to(device))
                loss = loss + cfg.caption_weight * caption_loss
        slot_loss = torch.zeros((), device=device)
        if slot_targets is not None and out["slot_logits"] is not None:
            slot_loss = slot_attribute_loss(out["slot_logits"], slot_targets[idx].to(device))
            loss = loss + cfg.slot_attribute_weight * slot_loss
        _update(loss, optimizer, scheduler, params, cfg.grad_clip)
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            used = out["codes"].unique().numel() if quantizing else 0
            progress.set_postfix(recon=f"{recon.item():.4f}", codes=used)
            log.info("step %d/%d  recon %.4f  matte %.4f  commit %.4f  caption %.4f  invariance %.4f  slots %.4f  "
                     "codes in batch %d  (%s)", step + 1, cfg.steps, recon.item(), matte.item(),
                     out["commit_loss"].item(), caption_loss.item(), invariance.item(), slot_loss.item(), used,
                     progress.format_interval(progress.format_dict["elapsed"]))
    if cfg.decoder_steps:
        finetune_decoder(model, pixels, cfg, generator, target_pixels)
    model.eval()
    return EmbeddedImageTokenizer(cfg.model, model, device=device)


def finetune_decoder(model: ImageTokenizerModel, pixels: torch.Tensor, cfg: ImageTrainConfig,
                     generator: torch.Generator, targets: torch.Tensor | None = None) -> None:
    """Train the decoder alone for `cfg.decoder_steps` on the codes of the trained encoder
    for `pixels`, to draw `targets` (the same rows; default: `pixels` themselves).

    The model stays in eval mode throughout, so the quantizer neither updates nor expires
    codes: the decoder sees exactly the codes `encode` will give it."""
    device = next(model.parameters()).device
    params = model.decoder_parameters()
    optimizer = torch.optim.AdamW(params, lr=cfg.decoder_lr, weight_decay=cfg.weight_decay)
    steps = cfg.decoder_steps
    scheduler = cosine_schedule(optimizer, 0, steps, LR_FLOOR)
    model.eval()
    progress = tqdm(range(steps), desc="image decoder", unit="step", mininterval=5.0)
    targets = pixels if targets is None else targets
    for step in progress:
        idx = torch.randint(len(pixels), (cfg.batch_size,), generator=generator)
        with torch.no_grad():
            quantized, _, _ = model.quantize(model.encode_features(pixels[idx].to(device)))
        recon, matte = reconstruction_losses(*model.decode_with_matte(quantized), targets[idx].to(device), cfg)
        loss = recon + cfg.matte_weight * matte
        _update(loss, optimizer, scheduler, params, cfg.grad_clip)
        if step % cfg.log_every == 0 or step == steps - 1:
            progress.set_postfix(recon=f"{recon.item():.4f}")
            log.info("decoder step %d/%d  recon %.4f  matte %.4f", step + 1, steps, recon.item(), matte.item())


def codebook_stats(codes: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Fraction of the codebook used by `codes` and the perplexity of their distribution."""
    counts = torch.bincount(codes.flatten(), minlength=codebook_size).double()
    probs = counts / counts.sum()
    entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum().item()
    return {"codebook_usage": (counts > 0).double().mean().item(), "codebook_perplexity": math.exp(entropy)}


def reconstruction_quality(originals: list[PILImage.Image], reconstructions: list[PILImage.Image]) -> dict[str, float]:
    """Mean PSNR (dB) and SSIM of reconstructions against originals resized to their size."""
    psnr, ssim = [], []
    for original, recon in zip(originals, reconstructions):
        a = np.asarray(original.convert("RGB").resize(recon.size, PILImage.Resampling.BICUBIC))
        b = np.asarray(recon)
        psnr.append(peak_signal_noise_ratio(a, b, data_range=255))
        ssim.append(structural_similarity(a, b, channel_axis=-1, data_range=255))
    return {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim))}


def code_consistency(tokenizer: EmbeddedImageTokenizer, scenes: list[Scene], codes: torch.Tensor, seed: int,
                     position_cells: list[int] | None = None) -> dict[str, float | list[float]]:
    """Share of code positions that stay the same when each scene (whose renders have
    `codes`) is rendered again with other nuisance: a new background tint and jitter
    (`consistency`, also per position), only a new jitter, only a new tint. Most positions
    of a scene show empty background; with `position_cells` (the grid cell each position
    describes, see `cell_information`) `consistency_on_objects` counts only the positions
    whose cell holds an object, the codes a language model has to get right to draw it."""
    size = tokenizer.image_size
    metrics: dict[str, float | list[float]] = {}
    for name, background, jitter in (("consistency", True, True), ("consistency_jitter", False, True),
                                     ("consistency_tint", True, False)):
        again = [render(with_nuisance(s, seed + i, background, jitter), size) for i, s in enumerate(scenes)]
        same = tokenizer.encode(again) == codes
        metrics[name] = same.double().mean().item()
        if name == "consistency":
            metrics["consistency_per_position"] = same.double().mean(dim=0).tolist()
            if position_cells is not None:
                occupied = torch.from_numpy(cell_contents(scenes)[:, position_cells] > 0)
                metrics["consistency_on_objects"] = same[occupied].double().mean().item() if occupied.any() else math.nan
    return metrics


def _replace_one_object(scene: Scene, rng: random.Random) -> Scene:
    """`scene` with one of its objects swapped for a different object in the same cell."""
    index = rng.randrange(len(scene.objects))
    old = scene.objects[index]
    new = old
    while new == old:
        new = SceneObject(rng.choice(SHAPES), rng.choice(tuple(COLORS)), rng.choice(SIZES), old.row, old.col)
    return dataclasses.replace(scene, objects=scene.objects[:index] + (new,) + scene.objects[index + 1:])


def codes_changed_per_object_change(tokenizer: EmbeddedImageTokenizer, scenes: list[Scene], seed: int) -> float:
    """Mean number of code positions that change when one object of a scene with two or more
    objects is replaced by another in its cell, the background and jitter kept (a writable
    code changes only where that cell is described; NaN without such scenes)."""
    several = [s for s in scenes if len(s.objects) >= 2]
    if not several:
        return math.nan
    rng = random.Random(seed)
    edited = [_replace_one_object(s, rng) for s in several]
    size = tokenizer.image_size
    before = tokenizer.encode([render(s, size) for s in several])
    after = tokenizer.encode([render(s, size) for s in edited])
    return (before != after).sum(dim=1).double().mean().item()


def cell_contents(scenes: list[Scene]) -> np.ndarray:
    """Each grid cell's content as an integer [N, GRID*GRID]: 0 empty, else 1 + the index of
    the object's (shape, colour, size)."""
    kinds = {k: i + 1 for i, k in enumerate((sh, c, sz) for sh in SHAPES for c in COLORS for sz in SIZES)}
    contents = np.zeros((len(scenes), GRID * GRID), dtype=np.int64)
    for row, scene in enumerate(scenes):
        for o in scene.objects:
            contents[row, o.row * GRID + o.col] = kinds[(o.shape, o.color, o.size)]
    return contents


def mutual_information(x: np.ndarray, y: np.ndarray) -> float:
    """Plug-in mutual information (nats) between two integer sequences."""
    _, xi = np.unique(x, return_inverse=True)
    _, yi = np.unique(y, return_inverse=True)
    joint = np.zeros((xi.max() + 1, yi.max() + 1))
    np.add.at(joint, (xi, yi), 1.0)
    joint /= joint.sum()
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / outer[nz])).sum())


def cell_information(codes: torch.Tensor, scenes: list[Scene], seed: int, shuffles: int = 4) -> dict:
    """How much each code position tells about each grid cell's content, over held-out scenes.

    Information is plug-in mutual information less its mean over `shuffles` random pairings
    of codes with scenes (the estimator's bias at this sample size, large with many code
    values and few scenes), floored at 0. Per position: its information in nats summed over
    cells, the most informative cell, and that cell's share of the sum (1: the position
    describes one cell; 1/9: all cells alike). `cell_information_share` is the mean share over
    positions weighted by their information."""
    contents = cell_contents(scenes)
    codes_np = codes.numpy()
    rng = np.random.default_rng(seed)
    info = np.zeros((codes_np.shape[1], contents.shape[1]))
    for p in range(codes_np.shape[1]):
        for c in range(contents.shape[1]):
            bias = np.mean([mutual_information(codes_np[:, p], rng.permutation(contents[:, c])) for _ in range(shuffles)])
            info[p, c] = max(0.0, mutual_information(codes_np[:, p], contents[:, c]) - bias)
    total = info.sum(axis=1)
    share = np.divide(info.max(axis=1), total, out=np.zeros_like(total), where=total > 0)
    return {"cell_information_share": float((share * total).sum() / max(total.sum(), 1e-12)),
            "cell_information_share_per_position": share.tolist(),
            "cell_information_per_position": total.tolist(),
            "cell_per_position": info.argmax(axis=1).tolist()}


def evaluate(tokenizer: EmbeddedImageTokenizer, val_set: ImageSet, canonical_target: bool = False,
             seed: int = 0) -> dict:
    """Held-out metrics: PSNR, SSIM, codebook usage/perplexity, encode and decode
    images/s, and with ground-truth scenes the judge's exact rate on reconstructions (beside
    its rate on the originals, the ceiling) and the writability probes (`code_consistency`,
    `codes_changed_per_object_change`, `cell_information`).

    With `canonical_target` PSNR and SSIM compare reconstructions with the canonical renders
    the decoder was trained to draw; the judge reads objects only, so `judge_exact` is the
    same measurement either way."""
    images = val_set.images
    start = time.perf_counter()
    codes = tokenizer.encode(images)
    encode_s = time.perf_counter() - start
    start = time.perf_counter()
    reconstructions = tokenizer.decode(codes)
    decode_s = time.perf_counter() - start
    references = images
    if canonical_target:
        if val_set.scenes is None:
            raise ValueError("canonical_target needs held-out procedural scenes")
        references = [render(canonical(s), tokenizer.image_size) for s in val_set.scenes]
    metrics = {"n": len(images), **reconstruction_quality(references, reconstructions),
               **codebook_stats(codes, tokenizer.codebook_size),
               "encode_images_per_s": len(images) / encode_s, "decode_images_per_s": len(images) / decode_s}
    if val_set.scenes is not None:
        recon_score = image_judge.score(val_set.scenes, reconstructions)
        metrics["judge_exact"] = recon_score["exact"]
        metrics["judge_object_recall"] = recon_score["object_recall"]
        metrics["judge_exact_on_originals"] = image_judge.score(val_set.scenes, images)["exact"]
        information = cell_information(codes, val_set.scenes, seed)
        metrics.update(code_consistency(tokenizer, val_set.scenes, codes, seed, information["cell_per_position"]))
        metrics["codes_changed_per_object_change"] = codes_changed_per_object_change(tokenizer, val_set.scenes, seed)
        metrics.update(information)
    return metrics


def _datasets(cfg: ImageTrainConfig) -> tuple[ImageSet, ImageSet]:
    if not cfg.data:
        # Held-out scenes come from a different seed stream than the training scenes.
        val_seed = cfg.seed + 1_000_003
        return (render_scene_set(cfg.scenes, cfg.seed, cfg.model.image_size),
                render_scene_set(cfg.val_images, val_seed, cfg.model.image_size))
    data = load_images(cfg.data, cfg.max_pixels)
    n_val = min(cfg.val_images, len(data.images) // 2)
    if n_val < 1 or len(data.images) - n_val < 1:
        raise ValueError(f"{cfg.data}: need at least 2 images to train and hold out, got {len(data.images)}")
    cut = len(data.images) - n_val
    return ImageSet(data.images[:cut], data.captions[:cut]), ImageSet(data.images[cut:], data.captions[cut:])


def train_from_config(config_path: str | Path, out_dir: str | Path | None = None) -> dict[str, float]:
    """Train from a TOML config, save the tokenizer and `metrics.json` to `out_dir` (default:
    the config's), and return the metrics."""
    cfg = load_config(ImageTrainConfig, config_path)
    out = Path(out_dir or cfg.out_dir)
    train_set, val_set = _datasets(cfg)
    start = time.perf_counter()
    tokenizer = train(cfg, train_set)
    train_seconds = time.perf_counter() - start
    tokenizer.save(out)
    metrics = {**evaluate(tokenizer, val_set, cfg.canonical_target, cfg.seed), "train_seconds": train_seconds, "steps": cfg.steps,
               "decoder_steps": cfg.decoder_steps, "train_images": len(train_set.images)}
    (out / METRICS_NAME).write_text(json.dumps(metrics, indent=2) + "\n")
    (out / TRAIN_CONFIG_NAME).write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
    log.info("saved image tokenizer to %s: %s", out,
             ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                       for k, v in metrics.items() if not isinstance(v, list)))
    return metrics
