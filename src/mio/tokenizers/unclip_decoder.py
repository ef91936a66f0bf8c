"""The image decoder of the released MIO-7B: SEED image embeddings -> pixels through Stable
Diffusion 2.1 unCLIP (diffusers' `StableUnCLIPImg2ImgPipeline`).

SEED-Tokenizer turns an image's 32 codes into one image embedding in the space of CLIP
ViT-H/14's image embeddings (1024-d). The released MIO-7B directory ships
`stable-diffusion-2-1-unclip/`, a standard diffusers folder, and the official inference
(SEED's `ImageTokenizer.decode`) calls the pipeline with that embedding in place of an
image: `pipe(image_embeds=embeds, noise_level=0, guidance_scale=10, num_inference_steps=20)`,
no prompt. What diffusers does with it (`pipeline_stable_unclip_img2img.py`):

- No prompt means the empty prompt `""` for both halves of classifier-free guidance, so the
  text branch carries no information and guidance acts on the image embedding alone.
- `image_embeds` skips `feature_extractor` and `image_encoder` (the pipeline still needs the
  image encoder loaded: it reads the embeddings' dtype from its parameters).
- The embedding is normalised with `image_normalizer`'s CLIP statistics, noised by
  `image_noising_scheduler` at `noise_level` (0 still mixes in ~0.6% noise: the cosine
  schedule's first step), un-normalised, and concatenated with the sinusoidal embedding of
  `noise_level`: [N, 2D] = [N, 2048] for SD 2.1 unCLIP-H. The UNet takes it as `class_labels`
  (`class_embed_type="projection"`); the unconditional half of guidance is all zeros.

`UnclipDecoder.load` builds the pipeline from a local folder only; `write_tiny_unclip` writes
a tiny random-weight pipeline in the same layout, so the code path is tested without the
multi-gigabyte release. diffusers is an optional dependency: `pip install -e ".[diffusion]"`.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from packaging.version import Version
from PIL import Image as PILImage
from safetensors import SafetensorError

log = logging.getLogger(__name__)

RELEASED_SUBFOLDER = "stable-diffusion-2-1-unclip"
"""Where the released MIO-7B directory keeps the pipeline."""
PIPELINE_CLASS = "StableUnCLIPImg2ImgPipeline"
INSTALL_HINT = 'pip install -e ".[diffusion]"'
MODEL_INDEX = "model_index.json"

# What each component of the released folder must hold, and what it is (for error messages).
# Alternatives are "any one of"; weight files may be sharded (an index) or carry a variant
# (`diffusion_pytorch_model.fp16.safetensors`), hence the globs.
_WEIGHTS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
_COMPONENTS: dict[str, tuple[str, tuple[tuple[str, ...], ...]]] = {
    "unet": ("the denoising UNet", (("config.json",), _WEIGHTS)),
    "vae": ("the latent autoencoder", (("config.json",), _WEIGHTS)),
    "text_encoder": ("the CLIP text encoder", (("config.json",), _WEIGHTS)),
    "tokenizer": ("the CLIP tokenizer", (("tokenizer.json", "vocab.json"),)),
    "image_encoder": ("the CLIP image encoder", (("config.json",), _WEIGHTS)),
    "feature_extractor": ("the CLIP image processor", (("preprocessor_config.json",),)),
    "image_normalizer": ("the CLIP embedding statistics", (("config.json",), _WEIGHTS)),
    "image_noising_scheduler": ("the embedding noise schedule", (("scheduler_config.json",),)),
    "scheduler": ("the denoising schedule", (("scheduler_config.json",),)),
}


@dataclass(frozen=True)
class UnclipConfig:
    """How `UnclipDecoder.decode` samples. The defaults are the official SEED/MIO inference."""

    guidance_scale: float = 10.0
    """Classifier-free guidance weight; the unconditional branch is a zero image embedding.
    Values <= 1 turn guidance off (one UNet pass per step instead of two)."""
    num_inference_steps: int = 20
    """Denoising steps of the folder's scheduler (DDIM in the release)."""
    noise_level: int = 0
    """Noise added to the image embedding before conditioning (0 .. 999); higher values give
    more varied images that follow the embedding less closely."""
    height: int | None = None
    """Output height in pixels (a multiple of 8); None takes the pipeline's own size,
    `unet.sample_size * vae_scale_factor` (768 for SD 2.1 unCLIP)."""
    width: int | None = None
    """Output width in pixels (a multiple of 8); None takes the pipeline's own size."""
    seed: int | None = 0
    """Seed used when `decode` is given none, so a decode repeats exactly by default; None
    draws a fresh seed per call (logged, so a result can still be reproduced)."""


def _import_diffusers():
    """diffusers is optional: import it, or say how to install it."""
    try:
        import diffusers
    except ImportError as exc:
        raise ImportError(f"decoding SEED embeddings to pixels needs diffusers: {INSTALL_HINT}") from exc
    return diffusers


def _has_any(folder: Path, names: tuple[str, ...]) -> bool:
    return any(next(folder.glob(name), None) is not None for name in names)


def _resolve_folder(directory: str | Path) -> Path:
    """The pipeline folder itself, or the released MIO-7B directory that holds it."""
    folder = Path(directory)
    if not (folder / MODEL_INDEX).is_file() and (folder / RELEASED_SUBFOLDER / MODEL_INDEX).is_file():
        folder = folder / RELEASED_SUBFOLDER
    return folder


def check_unclip_folder(directory: str | Path) -> Path:
    """Check that `directory` is a complete Stable Diffusion unCLIP img2img folder (or a MIO-7B
    directory holding one in `stable-diffusion-2-1-unclip/`) and return the pipeline folder.
    Raises ValueError naming the folder and the first missing part."""
    folder = _resolve_folder(directory)
    if not folder.is_dir():
        raise ValueError(f"unCLIP decoder folder {folder} does not exist")
    index_file = folder / MODEL_INDEX
    if not index_file.is_file():
        raise ValueError(f"unCLIP decoder folder {folder} has no {MODEL_INDEX}: not a diffusers pipeline folder")
    try:
        index = json.loads(index_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"unCLIP decoder folder {folder}: {MODEL_INDEX} is unreadable ({exc})") from exc
    if not isinstance(index, dict) or index.get("_class_name") != PIPELINE_CLASS:
        found = index.get("_class_name") if isinstance(index, dict) else type(index).__name__
        raise ValueError(f"unCLIP decoder folder {folder} holds a {found!r} pipeline, not {PIPELINE_CLASS}")
    for name, (what, requirements) in _COMPONENTS.items():
        entry = index.get(name)
        if not isinstance(entry, list) or None in entry:
            raise ValueError(f"unCLIP decoder folder {folder}: {MODEL_INDEX} names no {name} ({what})")
        sub = folder / name
        if not sub.is_dir():
            raise ValueError(f"unCLIP decoder folder {folder} is missing {name}/ ({what})")
        for alternatives in requirements:
            if not _has_any(sub, alternatives):
                raise ValueError(f"unCLIP decoder folder {folder}: {name}/ ({what}) has no {' or '.join(alternatives)}")
    return folder


def _weights_format(folder: Path) -> tuple[bool | None, str | None]:
    """(`use_safetensors`, `variant`) for diffusers: safetensors only when every weighted component
    has them (else diffusers' own choice, which falls back to .bin), and the fp16 variant only
    when some component has no plain weight file."""
    weighted = [folder / name for name, (_, req) in _COMPONENTS.items() if _WEIGHTS in req]
    use_safetensors = True if all(_has_any(sub, ("*.safetensors", "*.safetensors.index.json")) for sub in weighted) else None
    plain = ("diffusion_pytorch_model.*", "model.*", "pytorch_model.*")
    # A plain name has one suffix (or `.index.json`); `model.fp16.safetensors` has a variant.
    def has_plain(sub: Path) -> bool:
        return any(len(p.suffixes) == 1 or p.name.endswith(".index.json") for pattern in plain for p in sub.glob(pattern))
    variant = None if all(has_plain(sub) for sub in weighted) else "fp16"
    return use_safetensors, variant


def _run_dtype(device: torch.device, dtype: torch.dtype | None) -> torch.dtype:
    """The weights' dtype: by default float16 on CUDA, as the official inference, else float32;
    half precision on a CPU becomes float32, which CPUs run far faster."""
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
        log.info("unCLIP decoder on the CPU: using float32 instead of %s", dtype)
        return torch.float32
    return dtype


class UnclipDecoder:
    """SEED image embeddings [N, D] -> N RGB images, through a Stable Diffusion unCLIP img2img
    pipeline loaded from a local folder."""

    def __init__(self, pipeline, config: UnclipConfig | None = None):
        self.pipeline = pipeline
        self.config = config or UnclipConfig()
        # Our log lines replace diffusers' per-step progress bar.
        pipeline.set_progress_bar_config(disable=True)

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
             config: UnclipConfig | None = None) -> UnclipDecoder:
        """Load the pipeline from the local `directory` (the `stable-diffusion-2-1-unclip/` folder,
        or the MIO-7B directory holding it); nothing is fetched from a hub. `dtype` defaults to
        float16 on CUDA (as the official inference) and is float32 on a CPU. Raises ValueError for a
        missing or damaged folder and ImportError when diffusers is not installed."""
        diffusers = _import_diffusers()
        folder = check_unclip_folder(directory)
        device = torch.device(device)
        dtype = _run_dtype(device, dtype)
        use_safetensors, variant = _weights_format(folder)
        log.info("loading unCLIP decoder from %s (%s weights%s, %s)", folder,
                 "safetensors" if use_safetensors else "safetensors or .bin", f", variant {variant}" if variant else "", dtype)
        # diffusers 0.42 takes `dtype` and deprecates `torch_dtype`; older releases know only `torch_dtype`.
        dtype_key = "dtype" if Version(diffusers.__version__).release >= (0, 42) else "torch_dtype"
        try:
            pipeline = diffusers.StableUnCLIPImg2ImgPipeline.from_pretrained(
                folder, local_files_only=True, use_safetensors=use_safetensors, variant=variant, **{dtype_key: dtype},
                # Without accelerate, diffusers would warn and turn this off itself.
                low_cpu_mem_usage=importlib.util.find_spec("accelerate") is not None)
        except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError, SafetensorError) as exc:
            raise ValueError(f"unCLIP decoder folder {folder} could not be loaded (damaged?): {exc}") from exc
        decoder = cls(pipeline, config)
        decoder._check_widths(folder)
        return decoder.to(device)

    def _check_widths(self, folder: Path) -> None:
        """The UNet's class-embedding input must be the image embedding plus its noise-level
        embedding of the same width: a mismatch is a damaged or foreign folder."""
        unet = self.pipeline.unet.config
        if unet.class_embed_type != "projection" or unet.projection_class_embeddings_input_dim != 2 * self.embed_dim:
            raise ValueError(
                f"unCLIP decoder folder {folder}: unet/ takes class embeddings {unet.class_embed_type!r} of width "
                f"{unet.projection_class_embeddings_input_dim}, but image_normalizer/ is {self.embed_dim}-d "
                f"(expected 'projection' of width {2 * self.embed_dim})")

    @property
    def embed_dim(self) -> int:
        """Width D of the image embeddings the pipeline takes (1024 for SD 2.1 unCLIP-H)."""
        return int(self.pipeline.image_normalizer.config.embedding_dim)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the decoded images under the current config."""
        default = self.pipeline.unet.config.sample_size * self.pipeline.vae_scale_factor
        return self.config.height or default, self.config.width or default

    @property
    def device(self) -> torch.device:
        """Device the pipeline runs on."""
        return self.pipeline.device

    @property
    def dtype(self) -> torch.dtype:
        """Floating-point type of the pipeline's weights."""
        return self.pipeline.dtype

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> UnclipDecoder:
        """Move the pipeline to `device` (and `dtype`, default: its own); on a CPU half precision
        becomes float32."""
        device = torch.device(device)
        dtype = _run_dtype(device, dtype or self.dtype)
        if dtype != self.dtype:
            self.pipeline.to(device=device, dtype=dtype)
        else:
            # Casting an unchanged dtype again would only make diffusers warn about fp32-kept modules.
            self.pipeline.to(device)
        return self

    def decode(self, embeds: torch.Tensor, seed: int | None = None) -> list[PILImage.Image]:
        """Decode image embeddings [N, D] to N RGB images of `image_size`, in one batch. The same
        `seed` (default: the config's) gives the same pixels; the starting noise is drawn on the
        CPU so that it does not depend on the device."""
        if not isinstance(embeds, torch.Tensor) or embeds.ndim != 2 or embeds.shape[0] == 0:
            shape = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
            raise ValueError(f"unCLIP decode takes image embeddings of shape [N, {self.embed_dim}], got {shape}")
        if embeds.shape[1] != self.embed_dim:
            raise ValueError(f"unCLIP decode: the pipeline takes {self.embed_dim}-d image embeddings, got {embeds.shape[1]}-d "
                             f"(is the image tokenizer's embedding width the one this pipeline was trained on?)")
        if not torch.isfinite(embeds).all():
            raise ValueError("unCLIP decode: the image embeddings hold NaN or infinite values")
        if seed is None:
            seed = self.config.seed if self.config.seed is not None else secrets.randbits(63)
        cfg = self.config
        count = embeds.shape[0]
        height, width = self.image_size
        log.info("unCLIP: decoding %d image(s) at %dx%d, %d steps, guidance %g, noise level %d, seed %d",
                 count, width, height, cfg.num_inference_steps, cfg.guidance_scale, cfg.noise_level, seed)
        started = time.perf_counter()
        generator = torch.Generator(device="cpu").manual_seed(seed)
        images = self.pipeline(
            # One empty prompt per embedding: the pipeline's batch size comes from the prompt.
            prompt=[""] * count, image_embeds=embeds.detach().to(device=self.device, dtype=self.dtype),
            noise_level=cfg.noise_level, guidance_scale=cfg.guidance_scale,
            num_inference_steps=cfg.num_inference_steps, height=height, width=width,
            generator=generator, output_type="pil").images
        log.info("unCLIP: decoded %d image(s) in %.1f s", count, time.perf_counter() - started)
        return [image.convert("RGB") for image in images]


def _bpe_merges(word: str) -> list[tuple[str, str]]:
    """Left-to-right merges that build `word` (with CLIP's end-of-word mark) from its letters."""
    pieces = list(word[:-1]) + [word[-1] + "</w>"]
    merges = []
    while len(pieces) > 1:
        merges.append((pieces[0], pieces[1]))
        pieces[:2] = [pieces[0] + pieces[1]]
    return merges


def _write_clip_vocab(folder: Path) -> None:
    """A tiny CLIP BPE vocabulary: the special tokens, lowercase letters and digits (inside and at
    the end of a word), and merges for a few words; written as `vocab.json` + `merges.txt`."""
    symbols = "abcdefghijklmnopqrstuvwxyz0123456789"
    tokens = ["<|startoftext|>", "<|endoftext|>"] + list(symbols) + [s + "</w>" for s in symbols]
    merges = [merge for word in ("a", "an", "image", "photo", "of", "the") for merge in _bpe_merges(word)]
    merges = list(dict.fromkeys(merges))
    tokens += list(dict.fromkeys(left + right for left, right in merges if left + right not in tokens))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{left} {right}\n" for left, right in merges))


def write_tiny_unclip(directory: str | Path, embed_dim: int = 16, seed: int = 0) -> Path:
    """Write a tiny random-weight Stable Diffusion unCLIP img2img pipeline to `directory`, offline,
    in the released folder layout (safetensors weights), taking `embed_dim`-wide image embeddings
    (the SEED tokenizer's `image_features_dim`). It decodes 32x32 images. Returns `directory`."""
    diffusers = _import_diffusers()
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTokenizer,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    directory = Path(directory)
    text_width = 32
    _write_clip_vocab(directory / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(directory / "tokenizer", model_max_length=77)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=text_width, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, projection_dim=text_width, max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
        patch_size=8, projection_dim=embed_dim))
    normalizer = StableUnCLIPImageNormalizer(embedding_dim=embed_dim)
    with torch.no_grad():
        # Non-trivial statistics, so that scaling and un-scaling are exercised.
        normalizer.mean.normal_(0.0, 0.1)
        normalizer.std.uniform_(0.5, 1.5)
    unet = diffusers.UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        norm_num_groups=8, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=(2, 4), cross_attention_dim=text_width,
        # SD 2.1 unCLIP: the image embedding and its noise-level embedding, projected into the time embedding.
        class_embed_type="projection", projection_class_embeddings_input_dim=2 * embed_dim,
        use_linear_projection=True, upcast_attention=True)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16), norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32)
    pipeline = diffusers.StableUnCLIPImg2ImgPipeline(
        feature_extractor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        image_encoder=image_encoder.eval(), image_normalizer=normalizer,
        # The release's schedules: a cosine schedule noises the embedding, DDIM (v-prediction) denoises.
        image_noising_scheduler=diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2", num_train_timesteps=1000),
        tokenizer=tokenizer, text_encoder=text_encoder.eval(), unet=unet.eval(),
        scheduler=diffusers.DDIMScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", prediction_type="v_prediction",
            clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        vae=vae.eval())
    pipeline.save_pretrained(directory, safe_serialization=True)
    # Without torchvision, transformers builds its PIL fallback class and the index would name it;
    # the released folder (and older transformers) name CLIPImageProcessor, which loads either way.
    index_file = directory / MODEL_INDEX
    index = json.loads(index_file.read_text())
    index["feature_extractor"] = ["transformers", "CLIPImageProcessor"]
    index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    log.info("wrote a tiny unCLIP pipeline (%d-d image embeddings) to %s", embed_dim, directory)
    return directory
