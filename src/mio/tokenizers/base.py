"""The tokenizer protocol shared by embedded tokenizers and adapters for the paper's ones.

An image tokenizer turns PIL images into `tokens_per_image` discrete codes each and back;
a speech tokenizer turns a waveform into `[layers, T]` codes (row 0 content, rows 1..
timbre) and back. Each is saved to and loaded from a directory holding safetensors weights
and a `config.json` whose `"type"` names the implementation (see `TOKENIZER_TYPES`).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from PIL import Image as PILImage


@runtime_checkable
class ImageTokenizer(Protocol):
    codebook_size: int
    tokens_per_image: int

    def encode(self, images: list[PILImage.Image]) -> torch.Tensor:
        """Images -> LongTensor [N, tokens_per_image]."""

    def decode(self, codes: torch.Tensor) -> list[PILImage.Image]:
        """LongTensor [N, tokens_per_image] -> images."""

    def save(self, directory: str | Path) -> None: ...


@runtime_checkable
class SpeechTokenizer(Protocol):
    codebook_size: int
    frame_rate: float
    sample_rate: int

    def encode(self, wave, sample_rate: int) -> torch.Tensor:
        """Waveform (any rate, mono or multi-channel) -> LongTensor [4, T]."""

    def decode(self, codes: torch.Tensor) -> tuple[torch.Tensor, int]:
        """LongTensor [4, T] -> (waveform [N], sample_rate)."""

    def save(self, directory: str | Path) -> None: ...


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict (names -> tensors) from a safetensors file, or from a torch pickle read with
    `weights_only=True` (which refuses any object that is not a tensor or a plain container);
    a damaged or refused file is a ValueError naming it."""
    import pickle

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # Damaged files and files holding objects other than tensors both end here; neither is unpickled.
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: not a weights-only checkpoint, refused by the weights_only load ({reason})") from None
    except (RuntimeError, EOFError, SafetensorError) as e:
        raise ValueError(f"{path}: cannot read weights ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # some checkpoints wrap the state_dict
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f"{path}: expected a state_dict (names -> tensors), got {type(state).__name__}")
    return state


# "type" in config.json -> "module:Class" with a `load(directory)` classmethod.
TOKENIZER_TYPES: dict[str, str] = {
    "mio-image": "mio.tokenizers.image:EmbeddedImageTokenizer",
    "mio-speech": "mio.tokenizers.speech:EmbeddedSpeechTokenizer",
    "speechtokenizer": "mio.tokenizers.speechtokenizer_adapter:SpeechTokenizerAdapter",
    "seed-tokenizer": "mio.tokenizers.seed_tokenizer:SeedImageTokenizer",
}


# Released directories whose config.json has no "type" (or that have no config.json): the
# file that identifies each.
RELEASED_MARKERS: dict[str, tuple[str, ...]] = {
    "speechtokenizer": ("SpeechTokenizer.pt", "SpeechTokenizer.safetensors"),
    "seed-tokenizer": ("seed_quantizer.pt", "seed_quantizer.safetensors"),
}


def _tokenizer_kind(directory: Path) -> str:
    config_path = directory / "config.json"
    kind = None
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{config_path}: not valid JSON ({e})") from None
        kind = config.get("type") if isinstance(config, dict) else None
    if kind is None:
        kind = next((k for k, files in RELEASED_MARKERS.items() if any((directory / f).is_file() for f in files)), None)
    if kind is None and not config_path.is_file():
        raise FileNotFoundError(f"no tokenizer config.json in {directory}")
    if kind not in TOKENIZER_TYPES:
        raise ValueError(f"{config_path}: unknown tokenizer type {kind!r} (known: {sorted(TOKENIZER_TYPES)})")
    return kind


def load_tokenizer(directory: str | Path, protocol: type | None = None, **options):
    """Load any registered tokenizer from its directory by the `type` in its config.json (or
    a released directory by its weights file); with `protocol` (`ImageTokenizer` or
    `SpeechTokenizer`), refuse a tokenizer of another kind. `options` go to its `load`."""
    directory = Path(directory)
    kind = _tokenizer_kind(directory)
    module, cls = TOKENIZER_TYPES[kind].split(":")
    try:
        tokenizer = getattr(importlib.import_module(module), cls).load(directory, **options)
    except (FileNotFoundError, ValueError):
        raise
    except Exception as e:  # safetensors, torch and json each raise their own kinds on a damaged file
        raise ValueError(f"{directory}: cannot load the {kind!r} tokenizer ({type(e).__name__}: {e})") from None
    if protocol is not None and not isinstance(tokenizer, protocol):
        raise ValueError(f"{directory} holds a {kind!r} tokenizer, not the {protocol.__name__} expected there")
    return tokenizer
