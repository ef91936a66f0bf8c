"""Spectral features of the speech codec: magnitude STFT, log-mel, and Griffin-Lim back to a wave."""

from __future__ import annotations

import math

import numpy as np
import torch

from mio.media.audio import LOG_FLOOR


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
