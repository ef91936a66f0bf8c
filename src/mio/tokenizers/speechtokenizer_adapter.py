"""Adapter for the paper's SpeechTokenizer (as shipped in the released MIO checkpoints).

A released `SpeechTokenizer/` directory holds `config.json` (the model hyper-parameters,
without a "type" key) and `SpeechTokenizer.pt` (a state_dict, read with weights_only=True);
`mio convert` writes the same weights as `SpeechTokenizer.safetensors`, preferred when present. The model class comes from
the `speechtokenizer` PyPI package, installed with `pip install --no-deps speechtokenizer`.

Import workaround: the package's `__init__` also imports its trainer, which needs
torchaudio, accelerate, beartype, lion-pytorch, matplotlib ... none of which inference
uses. When that import fails we register a bare package object for `speechtokenizer`
(pointing at the installed directory, without running its `__init__`) and import only
`speechtokenizer.model`, whose own imports are torch, numpy and einops. After that,
`import speechtokenizer` in this process gives the bare package (the model modules work,
`speechtokenizer.SpeechTokenizerTrainer` does not exist).

MIO keeps RVQ layers 1-4 of the 8: codes are [4, T] at 50 frames/s, 1024 per layer.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import sys
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

from mio.media.audio import prepare_wave
from mio.tokenizers.base import read_state_dict
from mio.tokenizers.speech import check_codes

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "SpeechTokenizer.pt"
SAFETENSORS_FILE = "SpeechTokenizer.safetensors"
CONFIG_FILE = "config.json"
KEPT_LAYERS = 4
MAX_SECONDS = 15.0
"""The paper drops speech longer than 15 s."""
INSTALL_HINT = "pip install --no-deps speechtokenizer"


def speechtokenizer_model_class() -> type:
    """The `speechtokenizer.model.SpeechTokenizer` class, bypassing the trainer imports."""
    if importlib.util.find_spec("speechtokenizer") is None:
        raise ImportError(f"the SpeechTokenizer adapter needs the speechtokenizer package: {INSTALL_HINT}")
    try:
        return importlib.import_module("speechtokenizer.model").SpeechTokenizer
    except ImportError as e:
        log.debug("speechtokenizer's __init__ failed (%s); importing its model module alone", e)
    for name in [m for m in sys.modules if m == "speechtokenizer" or m.startswith("speechtokenizer.")]:
        del sys.modules[name]  # drop what the failed import left half-initialised
    spec = importlib.util.find_spec("speechtokenizer")
    package = types.ModuleType("speechtokenizer")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules["speechtokenizer"] = package
    return importlib.import_module("speechtokenizer.model").SpeechTokenizer


def is_speechtokenizer_dir(directory: str | Path) -> bool:
    """Whether `directory` looks like a released SpeechTokenizer directory."""
    directory = Path(directory)
    weights = (directory / SAFETENSORS_FILE).is_file() or (directory / CHECKPOINT_FILE).is_file()
    return weights and (directory / CONFIG_FILE).is_file()


class SpeechTokenizerAdapter:
    """The speech tokenizer protocol over a SpeechTokenizer checkpoint, layers 1-4."""

    def __init__(self, model: torch.nn.Module, config: dict, directory: Path | None = None):
        if config.get("n_q", 0) < KEPT_LAYERS:
            raise ValueError(f"SpeechTokenizer has {config.get('n_q')} RVQ layers; MIO needs at least {KEPT_LAYERS}")
        self.model = model.eval()
        self.config = config
        self.directory = directory
        self.num_layers = KEPT_LAYERS
        self.codebook_size = int(config["codebook_size"])
        self.sample_rate = int(config["sample_rate"])
        self.frame_rate = self.sample_rate / int(model.downsample_rate)
        self.max_seconds = MAX_SECONDS

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def load(cls, directory: str | Path) -> SpeechTokenizerAdapter:
        """Load `config.json` + `SpeechTokenizer.safetensors`, or `SpeechTokenizer.pt` (a
        state_dict, read with weights_only=True)."""
        directory = Path(directory)
        if not is_speechtokenizer_dir(directory):
            raise FileNotFoundError(f"{directory} is not a SpeechTokenizer directory "
                                    f"(needs {CONFIG_FILE} and {SAFETENSORS_FILE} or {CHECKPOINT_FILE})")
        config = json.loads((directory / CONFIG_FILE).read_text())
        model = speechtokenizer_model_class()(config)
        safetensors = directory / SAFETENSORS_FILE
        state = read_state_dict(safetensors if safetensors.is_file() else directory / CHECKPOINT_FILE)
        model.load_state_dict(state)
        return cls(model, config, directory)

    @torch.no_grad()
    def encode(self, wave, sample_rate: int) -> torch.Tensor:
        """Waveform (any rate; mono or multi-channel) -> LongTensor [4, T] (layer 1 = content)."""
        w = prepare_wave(wave, sample_rate, self.sample_rate, self.max_seconds).to(self.device)
        codes = self.model.encode(w[None, None], n_q=self.num_layers)  # [n_q, B, T]
        return codes[:, 0].long().cpu()

    @torch.no_grad()
    def decode(self, codes) -> tuple[torch.Tensor, int]:
        """LongTensor [4, T] -> (float32 wave [N], sample_rate)."""
        codes = check_codes(codes, self.num_layers, self.codebook_size).to(self.device)
        wave = self.model.decode(codes[:, None])  # [B, 1, N]
        return wave[0, 0].float().cpu(), self.sample_rate

    def save(self, directory: str | Path) -> None:
        """Write the released layout with safetensors weights: `config.json` +
        `SpeechTokenizer.safetensors`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(json.dumps(self.config, indent=2))
        state = {k: v.contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, str(directory / SAFETENSORS_FILE))
