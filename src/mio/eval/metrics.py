"""The paper's evaluation metrics, plus the toyworld's attribute checks.

- CIDEr (pycocoevalcap's pure-Python scorer) over captions tokenized by lowercasing and
  stripping punctuation (the Java PTB tokenizer is not needed for templated captions);
- VQA accuracy with the standard answer normalisation (punctuation, number words to digits,
  articles and common contractions);
- WER after Whisper's English normalisation (`mio.judges.speech.wer`: whisper-normalizer
  and jiwer);
- MCQ accuracy from the option letter a reply gives;
- SSIM (scikit-image) between a generated image and the ground-truth render;
- attribute accuracy of a caption: the objects it names read back and compared with the
  scene's objects.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
from PIL import Image

from mio.toyworld.scenes import COL_NAMES, COLORS, ROW_NAMES, SHAPES, SIZES, SceneObject

# VQA normalisation (the rules of the VQA evaluation: number words to digits, no articles,
# apostrophe-less contractions restored, punctuation removed or turned into spaces).
NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"))}
ARTICLES = {"a", "an", "the"}
CONTRACTIONS = {"dont": "don't", "doesnt": "doesn't", "isnt": "isn't", "arent": "aren't", "cant": "can't",
                "wont": "won't", "didnt": "didn't", "im": "i'm", "ive": "i've", "its": "it's", "thats": "that's",
                "whats": "what's", "wasnt": "wasn't", "werent": "weren't", "couldnt": "couldn't"}
PUNCTUATION = ";/[]\"{}()=+\\_-><@`,?!*#%^&$:"
VQA_AGREEMENT = 3
"""An answer given by this many annotators counts fully (the VQA rule)."""
MCQ_LETTER = re.compile(r"\b([A-D])\b")


def normalize_caption(text: str) -> str:
    """Lowercase words without punctuation, single-spaced (CIDEr's tokenization here)."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def cider(references: Sequence[Sequence[str]], hypotheses: Sequence[str]) -> float:
    """Corpus CIDEr-D of `hypotheses[i]` against `references[i]` (x1, as pycocoevalcap
    reports it; multiply by 100 for the paper's tables). Needs >= 2 items: CIDEr's IDF is
    computed over the test set, so one item scores 0 by construction."""
    from pycocoevalcap.cider.cider import Cider

    if len(references) != len(hypotheses) or not hypotheses:
        raise ValueError(f"need equally many (>0) reference sets and hypotheses, got {len(references)} and {len(hypotheses)}")
    gts = {i: [normalize_caption(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [normalize_caption(h)] for i, h in enumerate(hypotheses)}
    score, _ = Cider().compute_score(gts, res)
    return float(score)


def normalize_answer(text: str) -> str:
    """The VQA answer normalisation."""
    text = text.replace("\n", " ").replace("\t", " ").strip().lower()
    text = re.sub(r"(?<=\d),(?=\d)", "", text)  # 1,000 -> 1000
    text = re.sub(r"(?<!\d)\.(?!\d)", "", text)  # periods, except decimal points
    for p in PUNCTUATION:
        text = text.replace(p, " ")
    words = []
    for word in text.split():
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            words.append(CONTRACTIONS.get(word, word))
    return " ".join(words)


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQA accuracy of one prediction: with several human answers, min(1, matches / 3)
    averaged over leaving each answer out (the official rule); with one ground-truth answer
    (the toyworld), exact match after normalisation."""
    if not answers:
        raise ValueError("vqa_accuracy needs at least one answer")
    pred = normalize_answer(prediction)
    matches = [normalize_answer(a) == pred for a in answers]
    if len(answers) == 1:
        return float(matches[0])
    total = sum(matches)
    return sum(min(1.0, (total - m) / VQA_AGREEMENT) for m in matches) / len(answers)


def extract_answer(text: str, marker: str) -> str:
    """The text after the last `marker` (`The answer is 3.` -> `3`); all of it if absent."""
    index = text.rfind(marker)
    tail = text[index + len(marker):] if index >= 0 else text
    return tail.strip().rstrip(".").strip()


def mcq_letter(text: str) -> str | None:
    """The option letter (A-D) a reply gives: the first standalone capital A-D."""
    match = MCQ_LETTER.search(text)
    return match.group(1) if match else None


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER after Whisper's English normalisation."""
    from mio.judges.speech import wer as judge_wer

    return judge_wer(references, hypotheses)


def ssim(image: Image.Image, reference: Image.Image) -> float:
    """Structural similarity of two RGB images (the image is resized to the reference)."""
    from skimage.metrics import structural_similarity

    a = np.asarray(image.convert("RGB").resize(reference.size, Image.Resampling.BICUBIC), dtype=np.float64)
    b = np.asarray(reference.convert("RGB"), dtype=np.float64)
    return float(structural_similarity(a, b, channel_axis=-1, data_range=255.0))


_CELLS = {"center": (1, 1), **{f"{r} {c}": (i, j) for i, r in enumerate(ROW_NAMES) for j, c in enumerate(COL_NAMES)}}
_OBJECT = re.compile(
    r"(?:\b(?P<size>" + "|".join(SIZES) + r")\s+)?(?:\b(?P<color>" + "|".join(COLORS) + r")\s+)?"
    r"\b(?P<shape>" + "|".join(SHAPES) + r")(?:es|s)?\b"
    r"(?:\s+(?:placed\s+)?(?:at|in)\s+the\s+(?P<cell>(?:" + "|".join(ROW_NAMES) + r")\s+(?:" + "|".join(COL_NAMES)
    + r")|center))?"
)


def parse_objects(text: str) -> list[tuple[str, str | None, str | None, tuple[int, int] | None]]:
    """The objects a caption names, as (shape, colour, size, (row, col)); attributes the
    caption leaves out are None."""
    found = []
    for m in _OBJECT.finditer(text.lower()):
        cell = _CELLS.get(re.sub(r"\s+", " ", m.group("cell"))) if m.group("cell") else None
        found.append((m.group("shape"), m.group("color"), m.group("size"), cell))
    return found


def attribute_accuracy(objects: Sequence[SceneObject], text: str) -> dict[str, float]:
    """How well a caption describes a scene's objects.

    `attributes`: for each true object, the fraction of its four attributes (shape, colour,
    size, cell) that the best-matching named object gets right, averaged over objects;
    `exact`: the caption names exactly the scene's objects with every attribute."""
    named = parse_objects(text)
    if not objects:
        return {"attributes": float(not named), "exact": float(not named)}
    total = 0.0
    for o in objects:
        truth = (o.shape, o.color, o.size, (o.row, o.col))
        total += max((sum(a == b for a, b in zip(truth, n)) / len(truth) for n in named), default=0.0)
    truth_set = {(o.shape, o.color, o.size, (o.row, o.col)) for o in objects}
    exact = len(named) == len(objects) and set(named) == truth_set
    return {"attributes": total / len(objects), "exact": float(exact)}


def mean(values: Sequence[float]) -> float:
    """The mean, 0 for no values."""
    return float(sum(values) / len(values)) if values else 0.0


