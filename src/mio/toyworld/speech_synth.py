"""Speech synthesis for the embedded world: eSpeak NG driven through ctypes.

The `espeakng-loader` wheel ships `libespeak-ng` and its voice data, so no system package
is needed. eSpeak gives many distinct voices cheaply: a language/accent (`en-us`,
`en-gb-x-rp`, ...) times a variant (`+f3`, `+m2`, ...) times speaking rate and pitch. A
`Voice` names one such combination; `voice_pool` lists a deterministic pool of them with a
train / held-out split so that tokenizers can be judged on voices they never heard.

Synthesis is deterministic: the same text, `Voice` and seed always give the same samples,
whatever the process spoke before. eSpeak keeps state from one utterance to the next in
static variables of its wave generator (it survives `espeak_Terminate`): the pitch "flutter"
and "roughness" effects, and more that no API resets. With it, an utterance came out
different after different predecessors, so a world built by two worker processes depended
on their scheduling (docs/LOG.md, 2026-12-03). Two measures remove it: eSpeak runs on a
private view of its data directory (symlinks to the wheel's files) in which the variants we
use are copied with `flutter 0` and `roughness 0` (steadier voices), and every utterance is
spoken in a forked child of a process whose engine has been initialised but has never
spoken, so each one starts from the same state. The fork is not free in a large process
(its cost in `mio demo`: docs/LOG.md, 2026-12-03). eSpeak is a process-wide singleton C
library, so calls are serialised with a lock.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import os
import random
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mio.media.audio import resample

log = logging.getLogger(__name__)

DEFAULT_SAMPLE_RATE = 16000

# English accents shipped in espeak-ng-data/lang/gmw (voice names as espeak spells them).
ACCENTS = ("en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
# Variants from espeak-ng-data/voices/!v that stay intelligible (no whisper / robot effects).
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "Andy", "Annie", "john", "linda")
RATE_RANGE = (140, 210)
"""Words per minute (espeak default 175)."""
PITCH_RANGE = (30, 70)
"""espeak pitch 0..100 (default 50)."""

# espeak_ng C API constants (speak_lib.h).
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0
_INT16_SCALE = 32768.0
_BUFFER_MS = 0  # 0 = library default; we collect all chunks in the callback anyway

_VARIANT_PREFIX = "mio-"
_DEFAULT_VARIANT = "default"
_STATELESS = "\nflutter 0\nroughness 0\n"  # later lines override the variant's own values

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class SynthesisError(RuntimeError):
    """eSpeak NG could not be loaded or failed to speak."""


@dataclass(frozen=True)
class Voice:
    """One eSpeak NG voice: accent, variant, speaking rate and pitch."""

    name: str
    """Accent / language voice, e.g. `en-us` or `en-gb-x-rp`."""
    variant: str = ""
    """Voice variant from `voices/!v`, e.g. `f3` or `m2`; empty for the accent's default."""
    rate: int = 175
    """Words per minute."""
    pitch: int = 50
    """Base pitch, 0..100."""

    @property
    def espeak_name(self) -> str:
        """The name given to `espeak_SetVoiceByName`: accent plus our flutter-free copy of
        the variant, e.g. `en-us+mio-f3` (see the module docstring)."""
        return f"{self.name}+{_VARIANT_PREFIX}{self.variant or _DEFAULT_VARIANT}"

    @property
    def id(self) -> str:
        """A unique, readable identifier (used as speaker label)."""
        return f"{self.name}+{self.variant or _DEFAULT_VARIANT}@r{self.rate}p{self.pitch}"


def voice_pool(n_train: int = 64, n_heldout: int = 16, seed: int = 0) -> tuple[list[Voice], list[Voice]]:
    """A deterministic pool of distinct voices, split into (train, held-out).

    Each (accent, variant) pair appears at most once, with a rate and pitch drawn from the
    seeded generator, so held-out voices differ from every training voice in at least the
    accent/variant combination."""
    combos = list(itertools.product(ACCENTS, VARIANTS))
    if n_train + n_heldout > len(combos):
        raise ValueError(f"voice_pool: asked for {n_train + n_heldout} voices, only {len(combos)} distinct ones exist")
    rng = random.Random(seed)
    rng.shuffle(combos)
    voices = [
        Voice(accent, variant, rng.randint(*RATE_RANGE), rng.randint(*PITCH_RANGE))
        for accent, variant in combos[: n_train + n_heldout]
    ]
    return voices[:n_train], voices[n_train:]


def _flutter_free_data(source: Path, root: Path) -> Path:
    """A view of eSpeak's data dir under `root`: symlinks to `source`, plus `mio-<variant>`
    copies of the variants in `VARIANTS` (and `mio-default`) without flutter and roughness."""
    target = root / "espeak-ng-data"
    variants_src, variants_dst = source / "voices" / "!v", target / "voices" / "!v"
    variants_dst.mkdir(parents=True)
    for entry in source.iterdir():
        if entry.name != "voices":
            (target / entry.name).symlink_to(entry)
    for entry in (source / "voices").iterdir():
        if entry.name != "!v":
            (target / "voices" / entry.name).symlink_to(entry)
    for entry in variants_src.iterdir():
        (variants_dst / entry.name).symlink_to(entry)
    # Only the variants we use get a copy: eSpeak lists at most ~350 voices in all.
    for name in VARIANTS:
        text = (variants_src / name).read_text(errors="replace")
        (variants_dst / f"{_VARIANT_PREFIX}{name}").write_text(text + _STATELESS)
    header = f"language variant\nname {_DEFAULT_VARIANT}\n"
    (variants_dst / f"{_VARIANT_PREFIX}{_DEFAULT_VARIANT}").write_text(header + _STATELESS)
    return target


class _Espeak:
    """The loaded library, initialised once per process."""

    def __init__(self):
        import espeakng_loader  # part of the core dependencies; imported lazily to keep `import mio` light

        try:
            self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        except OSError as e:
            raise SynthesisError(f"cannot load libespeak-ng from espeakng_loader: {e}") from None
        lib = self.lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        # eSpeak also draws from libc's rand() (e.g. noise sources), so both are seeded.
        self.libc = ctypes.CDLL(None)
        self.libc.srand.argtypes = [ctypes.c_uint]
        self._data_dir = tempfile.TemporaryDirectory(prefix="mio-espeak-")
        data_path = _flutter_free_data(Path(espeakng_loader.get_data_path()), Path(self._data_dir.name))
        self.sample_rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, str(data_path).encode(), _INITIALIZE_DONT_EXIT
        )
        if self.sample_rate <= 0:
            raise SynthesisError(f"espeak_Initialize failed (data path {data_path})")
        self._chunks: list[np.ndarray] = []
        # Keep a reference to the callback object: ctypes would otherwise free it.
        self._callback = _SYNTH_CALLBACK(self._collect)
        lib.espeak_SetSynthCallback(self._callback)
        self.lock = threading.Lock()

    def _collect(self, wav, n, _events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = continue synthesis

    def speak(self, text: str, voice: Voice, seed: int) -> np.ndarray:
        """int16 samples at `self.sample_rate`, spoken in a forked child (see the module
        docstring) so that this process's engine never leaves its initial state."""
        with self.lock:
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: speak, send the samples or the error, and leave at once
                status = 1
                try:
                    os.close(read_end)
                    try:
                        payload, status = self._speak_here(text, voice, seed).tobytes(), 0
                    except SynthesisError as e:
                        payload = str(e).encode()
                    with os.fdopen(write_end, "wb") as pipe:
                        pipe.write(bytes([status]) + payload)
                finally:
                    os._exit(status)  # no atexit handlers, no flushing of the parent's buffers
            os.close(write_end)
            with os.fdopen(read_end, "rb") as pipe:
                reply = pipe.read()
            os.waitpid(pid, 0)
        if not reply:
            raise SynthesisError(f"the eSpeak child process died speaking {text!r} with voice {voice.id}")
        if reply[0] != 0:
            raise SynthesisError(reply[1:].decode())
        return np.frombuffer(reply[1:], dtype=np.int16)

    def _speak_here(self, text: str, voice: Voice, seed: int) -> np.ndarray:
        """Speak in this process (whose engine state it changes)."""
        self.lib.espeak_ng_SetRandSeed(seed)
        self.libc.srand(seed)
        if self.lib.espeak_SetVoiceByName(voice.espeak_name.encode()) != _EE_OK:
            raise SynthesisError(f"espeak has no voice {voice.espeak_name!r}")
        self.lib.espeak_SetParameter(_PARAM_RATE, voice.rate, 0)
        self.lib.espeak_SetParameter(_PARAM_PITCH, voice.pitch, 0)
        self._chunks = []
        data = text.encode() + b"\0"
        status = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != _EE_OK:
            raise SynthesisError(f"espeak_Synth failed with status {status} for {text!r}")
        chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


_ENGINE: _Espeak | None = None
_ENGINE_LOCK = threading.Lock()


def _engine() -> _Espeak:
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = _Espeak()
            log.debug("espeak-ng initialised at %d Hz", _ENGINE.sample_rate)
        return _ENGINE


def synthesize(text: str, voice: Voice, sample_rate: int = DEFAULT_SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """Speak `text` with `voice`; float32 mono waveform in [-1, 1] at `sample_rate`.

    eSpeak's small random variations are seeded with `seed`, so equal arguments give
    bit-identical audio."""
    if not text.strip():
        raise ValueError("synthesize: empty text")
    engine = _engine()
    pcm = engine.speak(text, voice, seed)
    if pcm.size == 0:
        raise SynthesisError(f"espeak produced no audio for {text!r} with voice {voice.id}")
    wave = pcm.astype(np.float32) / np.float32(_INT16_SCALE)
    # The resampling filter can overshoot full-scale int16 peaks slightly.
    return np.clip(resample(wave, engine.sample_rate, sample_rate), -1.0, 1.0)


def synthesize_many(
    texts: Sequence[str], voices: Sequence[Voice], sample_rate: int = DEFAULT_SAMPLE_RATE, seed: int = 0
) -> list[np.ndarray]:
    """Speak `texts[i]` with `voices[i]` for every i (the simple data source of the codec);
    utterance i is seeded with `seed + i`."""
    if len(texts) != len(voices):
        raise ValueError(f"synthesize_many: {len(texts)} texts but {len(voices)} voices")
    return [synthesize(t, v, sample_rate, seed + i) for i, (t, v) in enumerate(zip(texts, voices))]


# ---- procedural sentences (a stand-in until the full embedded world provides texts) ----

_COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "black", "white", "pink", "brown")
_SHAPES = ("circle", "square", "triangle", "star", "heart", "diamond", "ring", "cross")
_SIZES = ("big", "small", "tiny", "large")
_PLACES = ("on the left", "on the right", "at the top", "at the bottom", "in the middle", "near the corner")
_NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_TEMPLATES = (
    "a {size} {colour} {shape} is {place}",
    "there are {number} {colour} {shape}s",
    "the {colour} {shape} is next to the {colour2} {shape2}",
    "count the {shape}s: {number}",
    "i see a {size} {colour} {shape} {place}",
    "the picture shows {number} {shape}s and a {colour2} {shape2}",
    "is the {shape} {colour} or {colour2}",
    "move the {colour} {shape} {place}",
)


def sample_sentences(n: int, seed: int = 0) -> list[str]:
    """`n` short procedural sentences about coloured shapes and counting (lowercase, no digits)."""
    rng = random.Random(seed)
    return [
        rng.choice(_TEMPLATES).format(
            size=rng.choice(_SIZES), colour=rng.choice(_COLOURS), colour2=rng.choice(_COLOURS),
            shape=rng.choice(_SHAPES), shape2=rng.choice(_SHAPES), place=rng.choice(_PLACES),
            number=rng.choice(_NUMBERS),
        )  # fmt: skip
        for _ in range(n)
    ]
