"""Audio helpers shared by the speech tokenizers: loading, checks, downmixing, resampling,
loudness normalisation and spectral features.

Waveforms are float32; a multi-channel wave may be given as `[channels, samples]` (torch
convention) or `[samples, channels]` (soundfile convention): the channel axis is taken to
be the shorter one. Resampling is polyphase filtering (`scipy.signal.resample_poly`).
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

import numpy as np
import torch

SILENCE_PEAK = 1e-4
"""Peak amplitude below which audio is treated as silent (about -80 dBFS)."""
TARGET_RMS = 0.1
"""RMS level waves are normalised to before feature extraction (about -20 dBFS)."""
LOG_FLOOR = 1e-5
"""Small floor against dividing by zero or taking the log of zero."""


class AudioError(ValueError):
    """Audio input that cannot be used; the message names the problem."""


def load_audio(path: str | Path) -> tuple[torch.Tensor, int]:
    """Read an audio file with soundfile: (float32 wave [samples] or [channels, samples], rate)."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no audio file {path}")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{path}: not a readable audio file ({e})") from None
    wave = torch.from_numpy(np.ascontiguousarray(data.T))
    return (wave[0] if wave.shape[0] == 1 else wave), int(sr)


def to_mono(wave) -> torch.Tensor:
    """A float32 1-D tensor: multi-channel input averaged over channels."""
    w = torch.as_tensor(np.asarray(wave) if not isinstance(wave, torch.Tensor) else wave).float()
    if w.dim() == 2:
        w = w.mean(dim=0 if w.shape[0] <= w.shape[1] else 1)
    elif w.dim() != 1:
        raise AudioError(f"expected a 1-D or 2-D waveform, got shape {tuple(w.shape)}")
    return w


def resample(wave, orig_rate: int, new_rate: int):
    """Polyphase resampling of a 1-D wave; returns the same kind (numpy or torch) it got."""
    if orig_rate <= 0 or new_rate <= 0:
        raise AudioError(f"sample rates must be positive, got {orig_rate} -> {new_rate}")
    if orig_rate == new_rate:
        return wave
    from scipy.signal import resample_poly

    g = math.gcd(orig_rate, new_rate)
    is_torch = isinstance(wave, torch.Tensor)
    x = wave.numpy() if is_torch else np.asarray(wave)
    y = resample_poly(x, new_rate // g, orig_rate // g).astype(np.float32)
    return torch.from_numpy(y) if is_torch else y


def prepare_wave(wave, sample_rate: int, target_rate: int, max_seconds: float) -> torch.Tensor:
    """Check, downmix, resample and loudness-normalise a waveform for a speech encoder.

    Raises `AudioError` for empty, non-finite, silent or too-long audio. Clipped audio is
    accepted (it is still speech); its level is normalised like any other."""
    if not isinstance(sample_rate, numbers.Integral) or sample_rate <= 0:
        raise AudioError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    sample_rate = int(sample_rate)
    w = to_mono(wave)
    if w.numel() == 0:
        raise AudioError("empty audio: the waveform has no samples")
    if not torch.isfinite(w).all():
        raise AudioError("audio contains NaN or infinite samples")
    seconds = w.numel() / sample_rate
    if seconds > max_seconds:
        raise AudioError(f"audio is {seconds:.1f} s long, over the maximum of {max_seconds:g} s")
    if w.abs().max() < SILENCE_PEAK:
        raise AudioError(f"silent audio: peak amplitude {w.abs().max():.2e} is below {SILENCE_PEAK:g}")
    w = resample(w, sample_rate, target_rate)
    return normalize_loudness(w)


def normalize_loudness(wave: torch.Tensor) -> torch.Tensor:
    """Scale a wave to `TARGET_RMS` (so the codec sees one level), keeping peaks within [-1, 1]."""
    rms = wave.pow(2).mean().sqrt().clamp_min(LOG_FLOOR)
    w = wave * (TARGET_RMS / rms)
    peak = w.abs().max()
    return w / peak if peak > 1 else w


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Triangular HTK-scale mel filters, [n_freqs, n_mels], each filter normalised to unit area."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0, sample_rate / 2, n_freqs)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lower) / (centre - lower)
    down = (upper - freqs[None]) / (upper - centre)
    fb = np.clip(np.minimum(up, down), 0.0, None)
    fb /= np.maximum(fb.sum(axis=1, keepdims=True), LOG_FLOOR)
    return torch.from_numpy(fb.T.astype(np.float32))


class Spectrogram(torch.nn.Module):
    """Waveform -> magnitude STFT and log-mel, and magnitudes -> waveform (Griffin-Lim)."""

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, floor: float = LOG_FLOOR):
        super().__init__()
        self.n_fft, self.hop_length, self.floor = n_fft, hop_length, floor
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("mel_fb", mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate), persistent=False)

    def frames(self, n_samples: int) -> int:
        """STFT frames (centre padding) for a wave of `n_samples`."""
        return n_samples // self.hop_length + 1

    def magnitude(self, wave: torch.Tensor) -> torch.Tensor:
        """[B, N] or [N] wave -> [B, n_fft//2+1, frames] magnitude."""
        spec = torch.stft(
            wave.reshape(-1, wave.shape[-1]), self.n_fft, self.hop_length, window=self.window, return_complex=True
        )
        return spec.abs()

    def log_mel(self, magnitude: torch.Tensor) -> torch.Tensor:
        """Magnitude [B, F, T] -> log-mel [B, n_mels, T]."""
        return torch.log(torch.einsum("bft,fm->bmt", magnitude, self.mel_fb).clamp_min(self.floor))

    def log_magnitude(self, magnitude: torch.Tensor) -> torch.Tensor:
        """Magnitude -> log-magnitude, floored at `floor`."""
        return torch.log(magnitude.clamp_min(self.floor))

    def griffin_lim(self, magnitude: torch.Tensor, iterations: int, length: int | None = None) -> torch.Tensor:
        """Phase reconstruction from a magnitude [B, F, T] by Griffin-Lim with momentum
        (Perraudin et al. 2013); returns waves [B, N]."""
        momentum = 0.99
        generator = torch.Generator(device=magnitude.device).manual_seed(0)  # deterministic decode
        angles = torch.polar(torch.ones_like(magnitude), 2 * math.pi * torch.rand(magnitude.shape, generator=generator))
        previous = torch.zeros_like(angles)
        kw = dict(n_fft=self.n_fft, hop_length=self.hop_length, window=self.window)
        for _ in range(iterations):
            wave = torch.istft(magnitude * angles, length=length, **kw)
            rebuilt = torch.stft(wave, return_complex=True, **kw)
            accelerated = rebuilt - (momentum / (1 + momentum)) * previous
            angles = accelerated / accelerated.abs().clamp_min(LOG_FLOOR)
            previous = rebuilt
        return torch.istft(magnitude * angles, length=length, **kw)
