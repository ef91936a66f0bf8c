"""Reading audio: loading, checks, downmixing, resampling and loudness normalisation, one
path for training data, inference and the judges.

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

from mio.media.files import readable

SILENCE_PEAK = 1e-4
"""Peak amplitude below which audio is treated as silent (about -80 dBFS)."""
MIN_SECONDS = 0.1
"""Shorter audio holds no word and is shorter than a codec's analysis window."""
SAMPLE_RATES = (1_000, 384_000)
"""Sample rates accepted (the highest rate audio hardware records); outside them a file's
header is wrong, and resampling from it could ask for gigabytes."""
TARGET_RMS = 0.1
"""RMS level waves are normalised to before feature extraction (about -20 dBFS)."""
LOG_FLOOR = 1e-5
"""Small floor against dividing by zero or taking the log of zero."""


class AudioError(ValueError):
    """Audio input that cannot be used; the message names the problem."""


def load_audio(source: str | Path | bytes) -> tuple[torch.Tensor, int]:
    """Read an audio file (a path, or the file's bytes) with soundfile: (float32 wave
    [samples] or [channels, samples], rate)."""
    import soundfile as sf

    name, stream = readable(source, "audio", lambda path: FileNotFoundError(f"no audio file {path}"))
    try:
        data, sr = sf.read(name if isinstance(stream, Path) else stream, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise AudioError(f"{name}: not a readable audio file ({e})") from None
    if not SAMPLE_RATES[0] <= sr <= SAMPLE_RATES[1]:
        raise AudioError(f"{name}: sample rate {sr} Hz is outside {SAMPLE_RATES[0]}-{SAMPLE_RATES[1]} Hz")
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
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral) or sample_rate <= 0:
        raise AudioError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    if not SAMPLE_RATES[0] <= sample_rate <= SAMPLE_RATES[1]:
        raise AudioError(f"sample rate {sample_rate} Hz is outside {SAMPLE_RATES[0]}-{SAMPLE_RATES[1]} Hz")
    sample_rate = int(sample_rate)
    w = to_mono(wave)
    if w.numel() == 0:
        raise AudioError("empty audio: the waveform has no samples")
    if not torch.isfinite(w).all():
        raise AudioError("audio contains NaN or infinite samples")
    seconds = w.numel() / sample_rate
    if seconds > max_seconds:
        raise AudioError(f"audio is {seconds:.1f} s long, over the maximum of {max_seconds:g} s")
    if seconds < MIN_SECONDS:
        raise AudioError(f"audio is {seconds:.3f} s long, under the minimum of {MIN_SECONDS:g} s")
    if w.abs().max() < SILENCE_PEAK:
        raise AudioError(f"silent audio: peak amplitude {w.abs().max():.2e} is below {SILENCE_PEAK:g}")
    w = resample(w, sample_rate, target_rate)
    return normalize_loudness(w)


def normalize_loudness(wave: torch.Tensor) -> torch.Tensor:
    """Scale a wave to `TARGET_RMS` (so the codec sees one level), keeping peaks within [-1, 1]."""
    rms = wave.pow(2).mean().sqrt()
    if not torch.isfinite(rms):  # squares of very loud input overflow float32
        rms = wave.double().pow(2).mean().sqrt().float()
    rms = rms.clamp_min(LOG_FLOOR)
    w = wave * (TARGET_RMS / rms)
    peak = w.abs().max()
    return w / peak if peak > 1 else w
