"""LibriSpeech test-clean: speech recognition (WER) and speech synthesis (WER of what the
Whisper judge hears).

Layout under DATA: `LibriSpeech/test-clean/{speaker}/{chapter}/{speaker}-{chapter}.trans.txt`
(lines `ID TRANSCRIPT`) beside `{ID}.flac` (DATA may also be the `LibriSpeech` or the
`test-clean` folder itself). Items are ordered by speaker, chapter (numerically) and line.

ASR: instruction-tuned checkpoints are asked `{speech} Please transcribe this speech.`
(Table 12), base ones continue `{speech} Transcribe this speech:` (Appendix B); corpus WER
after Whisper's English normalisation, with a bootstrap interval; the blind baseline is an
empty transcript (WER 1.0).

TTS: instruction-tuned checkpoints are asked, in voice mode, `Please read the following text
aloud: {text}`; base ones continue `Please generate a speech of ``{text}'':`. The spoken
replies are transcribed by the Whisper judge (`mio.judges.speech`, the `judge` extra; the
benchmark is skipped without it) and scored by WER beside the judge's WER on the reference
recordings (`judge_wer_reference`, the floor a perfect speaker reaches). The blind baseline
says nothing (WER 1.0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from mio.eval import metrics
from mio.eval.benchmarks.common import Asker, BenchmarkSkipped, interval, require_file, wer_with_interval
from mio.eval.suites import BLOCK_OVERHEAD, speech_of, text_of
from mio.judges import speech as speech_judge
from mio.media.audio import load_audio
from mio.prompts import BASE_TEMPLATES, base_prompt, instruction
from mio.segments import Speech

SPLIT = "test-clean"
ROOT = "LibriSpeech"
TEXT_TOKENS_PER_SECOND = 8
"""Transcript budget: read speech is about 3 words (~5 tokens) a second."""
MIN_TEXT_TOKENS = 16
SPEECH_HEADROOM = 1.5
"""A spoken reply may be this many times as long as the reference recording."""
MAX_SPEECH_SECONDS = 15.0
"""The longest spoken reply asked for (the paper drops training speech longer than this)."""
DEFAULT_FRAME_RATE = 50.0


@dataclass(frozen=True)
class Utterance:
    """One recording, its transcript and its length."""

    id: str
    audio: Path
    transcript: str
    seconds: float


def split_folder(data: Path) -> Path:
    """The `test-clean` folder: DATA/LibriSpeech/test-clean, DATA/test-clean or DATA."""
    for folder in (data / ROOT / SPLIT, data / SPLIT, data):
        if folder.is_dir() and folder.name == SPLIT:
            return folder
    raise FileNotFoundError(f"{data / ROOT / SPLIT}: LibriSpeech {SPLIT} folder not found")


def _number(path: Path) -> tuple[float, str]:
    return (int(path.name), path.name) if path.name.isdigit() else (math.inf, path.name)


def _utterance(audio: Path, uid: str, transcript: str) -> Utterance:
    try:
        seconds = sf.info(str(require_file(audio, "LibriSpeech recording"))).duration
    except RuntimeError as e:  # soundfile's LibsndfileError
        raise ValueError(f"{audio}: not a readable audio file ({e})") from None
    return Utterance(uid, audio, transcript, seconds)


def load_items(data: Path, limit: int | None = None) -> list[Utterance]:
    """The first `limit` utterances of test-clean (speaker, chapter, line order)."""
    folder = split_folder(data)
    items: list[Utterance] = []
    for speaker in sorted((p for p in folder.iterdir() if p.is_dir()), key=_number):
        for chapter in sorted((p for p in speaker.iterdir() if p.is_dir()), key=_number):
            transcripts = require_file(chapter / f"{speaker.name}-{chapter.name}.trans.txt", "LibriSpeech transcript file")
            for line in transcripts.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                uid, _, text = line.strip().partition(" ")
                if not text.strip():
                    raise ValueError(f"{transcripts}: line {uid!r} has no transcript")
                items.append(_utterance(chapter / f"{uid}.flac", uid, text.strip()))
                if limit is not None and len(items) >= limit:
                    return items
    if not items:
        raise FileNotFoundError(f"{folder}: no {{speaker}}/{{chapter}}/*.trans.txt transcripts")
    return items


def run_asr(asker: Asker, data: Path, limit: int | None) -> dict:
    items = load_items(data, limit)
    if asker.base:
        prompts = [base_prompt(BASE_TEMPLATES["asr"], Speech(wave=str(i.audio))) for i in items]
    else:
        prompts = [[Speech(wave=str(i.audio)), instruction("asr")] for i in items]
    budgets = [MIN_TEXT_TOKENS + math.ceil(TEXT_TOKENS_PER_SECOND * i.seconds) for i in items]
    replies = asker.ask([i.id for i in items], prompts, "text", budgets)
    references = [i.transcript for i in items]
    wer, bounds = wer_with_interval(references, [text_of(r) for r in replies])
    empty, _ = wer_with_interval(references, [""] * len(items))
    return {"wer": wer, "ci95": {"wer": bounds}, "baselines": {"empty_transcript": {"wer": empty}}, "n": len(items)}


def speech_budget(asker: Asker, seconds: float) -> int:
    """Tokens for a spoken reply of `seconds` (all the speech tokenizer's layers)."""
    rate = getattr(asker.model.speech_tokenizer, "frame_rate", None) or DEFAULT_FRAME_RATE
    layers = asker.model.vocab.layout.speech_layers
    return math.ceil(min(MAX_SPEECH_SECONDS, SPEECH_HEADROOM * seconds) * rate) * layers + BLOCK_OVERHEAD


def sentence_case(transcript: str) -> str:
    """A LibriSpeech transcript (upper case) as ordinary text for the model to read."""
    return transcript.capitalize()


def run_tts(asker: Asker, data: Path, limit: int | None) -> dict:
    if not speech_judge.available():
        raise BenchmarkSkipped(speech_judge.UNAVAILABLE_HINT)
    items = load_items(data, limit)
    if asker.base:
        prompts = [base_prompt(BASE_TEMPLATES["tts"], text=sentence_case(i.transcript)) for i in items]
    else:
        prompts = [[instruction("tts", text=sentence_case(i.transcript))] for i in items]
    budgets = [speech_budget(asker, i.seconds) for i in items]
    replies = asker.ask([i.id for i in items], prompts, "speech", budgets, mode="voice")
    heard = []
    for reply in replies:
        speech = speech_of(reply)
        heard.append(speech_judge.transcribe([speech.wave], speech.sample_rate)[0] if speech is not None else "")
    for record, transcript in zip(asker.replies[-len(items):], heard):
        record["heard"] = transcript
    reference = [speech_judge.transcribe([wave], rate)[0] for wave, rate in (load_audio(i.audio) for i in items)]
    texts = [i.transcript for i in items]
    wer, bounds = wer_with_interval(texts, heard)
    reference_wer, reference_bounds = wer_with_interval(texts, reference)
    silent, _ = wer_with_interval(texts, [""] * len(items))
    spoken = [float(speech_of(r) is not None) for r in replies]
    return {"wer": wer, "judge_wer_reference": reference_wer, "has_speech": metrics.mean(spoken),
            "ci95": {"wer": bounds, "judge_wer_reference": reference_bounds, "has_speech": interval(spoken)},
            "baselines": {"no_speech": {"wer": silent}}, "n": len(items)}
