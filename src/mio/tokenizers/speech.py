"""The embedded speech tokenizer: a small SpeechTokenizer-like codec trained locally.

Like SpeechTokenizer (which MIO uses), speech becomes residual-VQ codes at a fixed frame
rate, four layers kept, where layer 1 carries content and layers 2-4 the rest (voice):

    wave -> log-mel (100 frames/s, standardised per band) -> conv encoder, downsampled
         to `frame_rate` -> ResidualVQ (4 layers x `codebook_size`) -> codes [4, T]
    codes -> sum of the layer embeddings -> conv decoder -> `downsample` standardised
         log-magnitude STFT frames per code -> Griffin-Lim -> wave

SpeechTokenizer distils HuBERT into its first RVQ layer; here the first layer's quantized
output instead feeds a CTC head that must spell the transcript (`CTC_ALPHABET`), which
makes layer 1 carry what is said. The other layers only see the reconstruction loss, so
they absorb what layer 1 leaves out: mostly the voice. Training is in `speech_train.py`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from torch import nn
from torch.nn import functional as F
from vector_quantize_pytorch import ResidualVQ

from mio.media.audio import normalize_loudness, prepare_wave
from mio.tokenizers.spectrogram import Spectrogram

TOKENIZER_TYPE = "mio-speech"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"

CTC_ALPHABET = " abcdefghijklmnopqrstuvwxyz'"
"""Characters the content (CTC) head spells; CTC class 0 is the blank, class i+1 is CTC_ALPHABET[i]."""
CTC_HEAD_KERNEL = 5
STD_FLOOR = 1e-3
"""Floor under the per-bin feature deviations (bins always at `spectral_floor` have none)."""


@dataclass
class SpeechTokenizerConfig:
    """Architecture of the embedded speech codec (the paper's SpeechTokenizer: 50 Hz, 4 x 1024)."""

    sample_rate: int = 16000
    """Rate the codec works at; `encode` resamples any input to it."""
    n_fft: int = 512
    """STFT size of the features and of the Griffin-Lim synthesis."""
    hop_length: int = 160
    """STFT hop in samples (160 at 16 kHz = 100 spectral frames per second)."""
    n_mels: int = 80
    """Mel bands of the encoder input."""
    spectral_floor: float = 1e-2
    """Floor under STFT / mel magnitudes before the log (about 65 dB below the peaks of
    loudness-normalised speech), so the losses ignore the inaudible noise floor."""
    frame_rate: float = 50.0
    """Code frames per second; sample_rate / hop_length / frame_rate must be an integer."""
    num_layers: int = 4
    """Residual VQ layers: layer 1 content, the rest timbre (MIO keeps 4)."""
    codebook_size: int = 1024
    """Codes per layer."""
    latent_dim: int = 64
    """Dimension of the quantized latent."""
    channels: int = 256
    """Width of the convolutional encoder and decoder at the code frame rate."""
    blocks: int = 4
    """Residual conv blocks in each of encoder and decoder (dilations 1, 2, 4, ... cycling)."""
    kernel_size: int = 3
    """Kernel size of the residual conv blocks."""
    ema_decay: float = 0.95
    """EMA decay of the codebook updates."""
    kmeans_iters: int = 10
    """k-means iterations initialising each codebook from the first batch."""
    dead_code_threshold: float = 2.0
    """Codes used less than this (EMA count) are replaced by batch vectors."""
    commitment_weight: float = 0.25
    """Weight of the VQ commitment loss."""
    ctc_upsample: int = 2
    """CTC outputs per code frame, so the content head can spell faster than the frame rate."""
    ctc_channels: int = 128
    """Width of the content head (a small conv over layer-1 embeddings, so it sees context)."""
    max_seconds: float = 15.0
    """Longest audio `encode` accepts (the paper drops speech over 15 s)."""
    griffin_lim_iters: int = 32
    """Griffin-Lim iterations when decoding."""

    def validate(self) -> None:
        """Raise ValueError on inconsistent values."""
        spectral_rate = self.sample_rate / self.hop_length
        ratio = spectral_rate / self.frame_rate
        if self.frame_rate <= 0 or abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
            raise ValueError(
                f"frame_rate {self.frame_rate} must divide the spectral rate {spectral_rate:g} "
                "(sample_rate / hop_length) into an integer"
            )
        if self.num_layers < 2:
            raise ValueError(f"num_layers must be at least 2 (content + timbre), got {self.num_layers}")
        if self.codebook_size < 2 or self.n_fft < self.hop_length or self.max_seconds <= 0:
            raise ValueError("codebook_size >= 2, n_fft >= hop_length and max_seconds > 0 are required")

    @property
    def downsample(self) -> int:
        """Spectral frames per code frame."""
        return round(self.sample_rate / self.hop_length / self.frame_rate)


class ResBlock(nn.Module):
    """Pre-norm residual block of two dilated 1-D convolutions."""

    def __init__(self, channels: int, kernel_size: int, dilation: int):
        super().__init__()
        self.norm = nn.GroupNorm(1, channels)
        self.conv1 = nn.Conv1d(channels, channels, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation)
        self.conv2 = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.gelu(self.conv1(F.gelu(self.norm(x)))))


def _stack(channels: int, kernel_size: int, n: int) -> nn.Sequential:
    return nn.Sequential(*[ResBlock(channels, kernel_size, 2 ** (i % 3)) for i in range(n)])


class SpeechCodec(nn.Module):
    """Encoder, residual VQ, decoder and the layer-1 content (CTC) head."""

    def __init__(self, config: SpeechTokenizerConfig):
        super().__init__()
        c = config
        self.config = c
        self.spec = Spectrogram(c.sample_rate, c.n_fft, c.hop_length, c.n_mels, c.spectral_floor)
        ds = c.downsample
        # Encoder: stack `ds` mel frames into one code frame, then mix over time.
        self.encoder = nn.Sequential(
            nn.Conv1d(c.n_mels, c.channels, ds, stride=ds),
            _stack(c.channels, c.kernel_size, c.blocks),
            nn.GroupNorm(1, c.channels),
            nn.GELU(),
            nn.Conv1d(c.channels, c.latent_dim, 1),
        )
        self.rvq = ResidualVQ(
            dim=c.latent_dim,
            num_quantizers=c.num_layers,
            codebook_size=c.codebook_size,
            decay=c.ema_decay,
            kmeans_init=True,
            kmeans_iters=c.kmeans_iters,
            threshold_ema_dead_code=c.dead_code_threshold,
            commitment_weight=c.commitment_weight,
        )
        n_freq = c.n_fft // 2 + 1
        # Decoder: mix over time at the code rate, then one linear map from each code frame to
        # its `ds` spectral frames: it generalises to held-out voices better than a transposed
        # conv decoding at 100 frames/s, and trains faster (docs/LOG.md, 2026-11-23).
        self.decoder = nn.Sequential(
            nn.Conv1d(c.latent_dim, c.channels, 1),
            _stack(c.channels, c.kernel_size, c.blocks),
            nn.GroupNorm(1, c.channels),
            nn.GELU(),
            nn.Conv1d(c.channels, ds * n_freq, 1),
        )
        # Per-bin statistics of the training features (set by `fit_normalization`): the encoder
        # sees standardised log-mels and the decoder predicts standardised log-magnitudes, so
        # quiet high bands weigh as much as loud low ones in the network's inputs and outputs
        # (without it reconstructions were unintelligible: docs/LOG.md, 2026-11-23).
        self.register_buffer("mel_mean", torch.zeros(c.n_mels))
        self.register_buffer("mel_std", torch.ones(c.n_mels))
        self.register_buffer("magnitude_mean", torch.zeros(n_freq))
        self.register_buffer("magnitude_std", torch.ones(n_freq))
        self.ctc_head = nn.Sequential(
            nn.Conv1d(c.latent_dim, c.ctc_channels, CTC_HEAD_KERNEL, padding=CTC_HEAD_KERNEL // 2),
            nn.GELU(),
            nn.Conv1d(c.ctc_channels, c.ctc_upsample * (len(CTC_ALPHABET) + 1), 1),
        )

    # ---- features ----

    def features(self, waves: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Waves [B, N] -> (log-magnitude [B, F, S], log-mel [B, n_mels, S]), S spectral frames."""
        magnitude = self.spec.magnitude(waves)
        return self.spec.log_magnitude(magnitude), self.spec.log_mel(magnitude)

    def code_frames(self, spectral_frames: int) -> int:
        """Code frames for a number of spectral frames (the last partial group is padded)."""
        return math.ceil(spectral_frames / self.config.downsample)

    # ---- the codec ----

    def encode_latent(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Log-mel [B, n_mels, S] -> latent [B, T, latent_dim] at the code frame rate."""
        ds = self.config.downsample
        pad = self.code_frames(log_mel.shape[-1]) * ds - log_mel.shape[-1]
        x = (log_mel - self.mel_mean[:, None]) / self.mel_std[:, None]
        x = F.pad(x, (0, pad), mode="replicate") if pad else x
        return self.encoder(x).transpose(1, 2)

    def quantize(self, latent: torch.Tensor, mask: torch.Tensor | None = None):
        """Residual VQ: (quantized [B, T, D], codes [B, T, layers], commitment loss)."""
        quantized, codes, commit = self.rvq(latent, mask=mask)
        return quantized, codes, commit.sum()

    def content(self, latent: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Layer-1 quantized output with a straight-through gradient to the encoder."""
        first = self.rvq.get_codes_from_indices(codes.clamp_min(0))[0]
        return latent + (first - latent).detach()

    def ctc_logits(self, content: torch.Tensor) -> torch.Tensor:
        """Content [B, T, D] -> CTC log-probabilities [B, T * ctc_upsample, classes]."""
        b, t, _ = content.shape
        logits = self.ctc_head(content.transpose(1, 2)).transpose(1, 2)
        return logits.reshape(b, t * self.config.ctc_upsample, -1).log_softmax(-1)

    def decode_log_magnitude(self, quantized: torch.Tensor) -> torch.Tensor:
        """Quantized [B, T, D] -> log-magnitude [B, F, T * downsample]."""
        b, t, _ = quantized.shape
        ds = self.config.downsample
        x = self.decoder(quantized.transpose(1, 2))  # [B, ds * F, T], channel k * F + f
        x = x.reshape(b, ds, -1, t).permute(0, 2, 3, 1).reshape(b, -1, t * ds)  # frame t * ds + k
        return x * self.magnitude_std[:, None] + self.magnitude_mean[:, None]

    @torch.no_grad()
    def fit_normalization(self, log_magnitude: torch.Tensor, log_mel: torch.Tensor, mask: torch.Tensor) -> None:
        """Set the per-bin statistics from training features [B, bins, S] (valid frames: mask [B, S])."""
        pairs = ((log_mel, self.mel_mean, self.mel_std), (log_magnitude, self.magnitude_mean, self.magnitude_std))
        for feats, mean, std in pairs:
            x = feats.transpose(1, 2)[mask]  # [frames, bins]
            mean.copy_(x.mean(0))
            std.copy_(x.std(0).clamp_min(STD_FLOOR))

    def codes_to_quantized(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, T, layers] -> summed layer embeddings [B, T, D]."""
        return self.rvq.get_output_from_indices(codes)

    def synthesize(self, log_magnitude: torch.Tensor) -> torch.Tensor:
        """Log-magnitude [B, F, S] -> waves [B, N] by Griffin-Lim."""
        length = (log_magnitude.shape[-1] - 1) * self.config.hop_length
        return self.spec.griffin_lim(log_magnitude.exp(), self.config.griffin_lim_iters, length=length)


def check_codes(codes, num_layers: int, codebook_size: int) -> torch.Tensor:
    """Validate speech codes for decoding: a [layers, T] grid of ints in range -> LongTensor."""
    if not isinstance(codes, torch.Tensor):
        rows = [list(r) for r in codes]
        lengths = [len(r) for r in rows]
        if len(set(lengths)) > 1:
            raise ValueError(f"speech codes have layers of unequal lengths {lengths}")
        codes = torch.tensor(rows, dtype=torch.long)
    if codes.dtype.is_floating_point or codes.dtype == torch.bool:
        raise ValueError(f"speech codes must be integers, got {codes.dtype}")
    if codes.dim() != 2 or codes.shape[0] != num_layers:
        raise ValueError(f"speech codes must have shape [{num_layers}, T], got {tuple(codes.shape)}")
    if codes.shape[1] == 0:
        raise ValueError("speech codes are empty (T = 0)")
    if codes.min() < 0 or codes.max() >= codebook_size:
        raise ValueError(f"speech codes out of range [0, {codebook_size}): min {codes.min()}, max {codes.max()}")
    return codes.long()


class EmbeddedSpeechTokenizer:
    """The speech tokenizer protocol over a trained `SpeechCodec`."""

    def __init__(self, config: SpeechTokenizerConfig, codec: SpeechCodec | None = None):
        config.validate()
        self.config = config
        self.codec = (codec or SpeechCodec(config)).eval()
        self.codebook_size = config.codebook_size
        self.frame_rate = config.frame_rate
        self.sample_rate = config.sample_rate
        self.num_layers = config.num_layers

    @property
    def device(self) -> torch.device:
        return next(self.codec.parameters()).device

    @torch.no_grad()
    def encode(self, wave, sample_rate: int) -> torch.Tensor:
        """Waveform (any rate; mono, [channels, N] or [N, channels]) -> LongTensor [layers, T].

        Raises `AudioError` (a ValueError) for empty, silent, non-finite or too long audio."""
        w = prepare_wave(wave, sample_rate, self.sample_rate, self.config.max_seconds).to(self.device)
        _, log_mel = self.codec.features(w[None])
        _, codes, _ = self.codec.quantize(self.codec.encode_latent(log_mel))
        return codes[0].T.cpu()

    @torch.no_grad()
    def decode(self, codes) -> tuple[torch.Tensor, int]:
        """LongTensor [layers, T] -> (float32 wave [N], sample_rate)."""
        codes = check_codes(codes, self.num_layers, self.codebook_size).to(self.device)
        log_mag = self.codec.decode_log_magnitude(self.codec.codes_to_quantized(codes.T[None]))
        wave = self.codec.synthesize(log_mag)[0]
        return normalize_loudness(wave).cpu(), self.sample_rate

    def save(self, directory: str | Path) -> None:
        """Write `config.json` (with "type": "mio-speech") and `model.safetensors`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(json.dumps({"type": TOKENIZER_TYPE, **asdict(self.config)}, indent=2))
        save_model(self.codec, str(directory / WEIGHTS_FILE))

    @classmethod
    def load(cls, directory: str | Path) -> EmbeddedSpeechTokenizer:
        """Read a directory written by `save`."""
        from mio import config as config_lib

        directory = Path(directory)
        for name in (CONFIG_FILE, WEIGHTS_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"speech tokenizer directory {directory} has no {name}")
        data = json.loads((directory / CONFIG_FILE).read_text())
        if data.pop("type", None) != TOKENIZER_TYPE:
            raise ValueError(f"{directory / CONFIG_FILE}: not a {TOKENIZER_TYPE!r} tokenizer")
        config = config_lib.load(SpeechTokenizerConfig, data)
        codec = SpeechCodec(config)
        load_model(codec, str(directory / WEIGHTS_FILE))
        return cls(config, codec)
