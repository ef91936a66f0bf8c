"""The paper's evaluation metrics, the toyworld's object and change checks, and confidence
intervals.

- CIDEr (pycocoevalcap's pure-Python scorer) over captions tokenized by lowercasing and
  stripping punctuation (the Java PTB tokenizer is not needed for templated captions);
- VQA accuracy with the standard answer normalisation (punctuation, number words to digits,
  articles and common contractions);
- WER after Whisper's English normalisation (`mio.judges.speech.wer`: whisper-normalizer
  and jiwer);
- MCQ accuracy from the option letter a reply gives;
- SSIM (scikit-image) between a generated image and the ground-truth render;
- object precision / recall / F1 / exact match (`object_scores`): whole objects (shape,
  colour, size, row, col) compared as multisets, so naming objects that are not there costs
  precision; `caption_scores` reads a caption's objects back first, and the same scores
  compare what the pixel judge reads from a generated picture with the true scene;
- change precision / recall / F1 / exact match of a video description (`parse_changes`,
  `change_scores`): every change the description claims against the clip's one change, so
  listing many changes does not pay;
- confidence intervals: Wilson for proportions, percentile bootstrap over items for any
  statistic (`bootstrap_interval`, `mean_interval`), and paired bootstrap for the difference
  of two systems scored on the same items.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from PIL import Image

from mio.toyworld.scenes import COL_NAMES, COLORS, ROW_NAMES, SHAPES, SIZES, SceneObject

if TYPE_CHECKING:
    from mio.toyworld.videos import Change

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
    """The text after the last `marker`, in any case (`The answer is 3.` -> `3`; Whisper
    writes `the answer is three.`); all of it if absent."""
    index = text.lower().rfind(marker.lower())
    tail = text[index + len(marker):] if index >= 0 else text
    return tail.strip().rstrip(".").strip()


def extract_spoken_answer(heard: str, marker: str) -> str:
    """The answer in a transcript of a spoken `<marker> X.`: the text after the last
    `marker`; where the judge misheard the marker (Whisper writes `The answer is 4` as `the
    ISO is 4`), the text after the last ` is ` of the sentence, which it keeps; else all of it."""
    lowered = heard.lower()
    if marker.lower() not in lowered and " is " in lowered:
        heard = heard[lowered.rfind(" is ") + len(" is "):]
    return extract_answer(heard, marker)


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


def mean(values: Sequence[float]) -> float:
    """The mean, 0 for no values."""
    return float(sum(values) / len(values)) if values else 0.0




# Object and change scores: claims against the truth as multisets. Every claim that is not
# matched costs precision, so naming many objects (or changes) in the hope that one is right
# does not pay, while precision-free recall-style checks (the best match per true object, a
# substring test) would reward it.

def _multiset_scores(truth: Counter, claimed: Counter) -> dict[str, float]:
    """Precision, recall, F1 and exact match of `claimed` against `truth` (both multisets).
    Nothing true and nothing claimed scores 1 everywhere; nothing claimed scores precision 0;
    claims against an empty truth score recall 1 (nothing was missed) but precision 0."""
    n_truth, n_claimed = sum(truth.values()), sum(claimed.values())
    if not n_truth and not n_claimed:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0, "exact": 1.0}
    matched = sum((truth & claimed).values())
    return {
        "precision": matched / n_claimed if n_claimed else 0.0,
        "recall": matched / n_truth if n_truth else 1.0,
        "f1": 2 * matched / (n_truth + n_claimed),
        "exact": float(truth == claimed),
    }


def _object_tuple(obj) -> tuple:
    return (obj.shape, obj.color, obj.size, obj.row, obj.col) if isinstance(obj, SceneObject) else tuple(obj)


def object_scores(truth: Collection[tuple], named: Sequence[tuple]) -> dict[str, float]:
    """How well a list of named objects matches the true objects.

    Objects are whole (shape, colour, size, row, col) tuples (as `Scene.key()` and
    `image_judge.object_key` give them; `SceneObject`s are accepted too): one counts only
    when every attribute is right. Both sides are multisets, so a duplicate in `named` is an
    extra claim. Returns `precision` (named objects that are true), `recall` (true objects
    named), `f1` and `exact` (1.0 when the named multiset is exactly the truth). Nothing
    true and nothing named scores 1.0 everywhere; nothing named against a non-empty truth
    scores 0.0 everywhere."""
    return _multiset_scores(Counter(_object_tuple(o) for o in truth), Counter(_object_tuple(o) for o in named))


def caption_scores(objects: Sequence[SceneObject], text: str) -> dict[str, float]:
    """`object_scores` of the objects a caption names (`parse_objects`) against a scene's
    objects: `precision`, `recall`, `f1`, `exact`. An attribute the caption leaves out is
    None and never matches, so a vague object counts as a wrong one."""
    named = [(shape, color, size, *(cell or (None, None))) for shape, color, size, cell in parse_objects(text)]
    return object_scores(objects, named)


class ChangeClaim(NamedTuple):
    """One change as a comparable tuple.

    `subject` is the object's (colour, shape) (how `videos.name` refers to it; for `appear`
    the new object's); `target` is what it becomes: the (row, col) it moves to, the size it
    grows or shrinks to, the colour it turns, the (size, row, col) it appears with, None for
    `disappear`. `none` / `other` (nothing changes / several things do) have neither.
    Parts a description leaves out are None and never match."""

    kind: str
    subject: tuple[str | None, str] | None
    target: Any


def change_claim(change: Change) -> ChangeClaim:
    """The `ChangeClaim` of a true `mio.toyworld.videos.Change`."""
    before, after = change.before, change.after
    if change.kind == "move":
        return ChangeClaim("move", (before.color, before.shape), (after.row, after.col))
    if change.kind in ("grow", "shrink"):
        return ChangeClaim(change.kind, (before.color, before.shape), after.size)
    if change.kind == "recolor":
        return ChangeClaim("recolor", (before.color, before.shape), after.color)
    if change.kind == "appear":
        return ChangeClaim("appear", (after.color, after.shape), (after.size, after.row, after.col))
    if change.kind == "disappear":
        return ChangeClaim("disappear", (before.color, before.shape), None)
    return ChangeClaim(change.kind, None, None)  # none / other


_ALT = lambda words: "|".join(words)
_CELL = rf"(?:(?:{_ALT(ROW_NAMES)})\s+(?:{_ALT(COL_NAMES)})|center)"
_LIST_SEP = r"\s*(?:,\s*(?:and\s+|or\s+)?|and\s+|or\s+)\s*"
_CELL_LIST = rf"(?:the\s+)?{_CELL}(?:{_LIST_SEP}(?:the\s+)?{_CELL})*"
_COLOR_LIST = rf"(?:{_ALT(COLORS)})\b(?:{_LIST_SEP}(?:{_ALT(COLORS)})\b)*"
_CHANGE = re.compile(
    # an optional subject right before the verb: `the red circle`, `a big red circle`
    rf"(?:\b(?:(?:the|a|an|one)\s+)?(?:(?P<size>{_ALT(SIZES)})\s+)?(?:(?P<color>{_ALT(COLORS)})\s+)?"
    rf"(?P<shape>{_ALT(SHAPES)})\s+)?"
    r"(?:"
    rf"\b(?P<move>moves|moved)\s+to\s+(?P<cells>{_CELL_LIST})"
    r"|\b(?P<grow>grows|grew)\b"
    r"|\b(?P<shrink>shrinks|shrank|shrunk)\b"
    rf"|\b(?P<recolor>turns|turned)\s+(?P<colors>{_COLOR_LIST})"
    rf"|\b(?P<appear>appears|appeared)\b(?:\s+(?:at|in)\s+(?P<where>{_CELL_LIST}))?"
    r"|\b(?P<disappear>disappears|disappeared|vanishes|vanished)\b"
    r"|\b(?P<none>nothing\s+changes)\b"
    r"|\b(?P<other>several\s+things\s+change)\b"
    r")"
)
_LIST_ITEM_CELL = re.compile(_CELL)


def parse_changes(text: str) -> list[ChangeClaim]:
    """Every change a video description claims, in order, as `ChangeClaim`s.

    Reads the sentences `videos.narrate` writes (also lowercased, after `Then`, and in the
    past tense): `<subject> moves to the <cell>`, `<subject> grows` / `shrinks`, `<subject>
    turns <colour>`, `a <size> <colour> <shape> appears at the <cell>`, `<subject>
    disappears`, `nothing changes` (kind `none`) and `several things change` (`other`). A verb
    without its own subject (`the red circle grows and then shrinks`) takes the last subject
    named in a change; lists are read as one claim each (`moves to the top left or the
    center`, `turns red, blue or green`). The scene caption `describe_clip` puts first has no
    change verbs and yields nothing."""
    from mio.toyworld.videos import NONE, OTHER

    claims: list[ChangeClaim] = []
    last_subject: tuple[str | None, str] | None = None
    for m in _CHANGE.finditer(text.lower()):
        if m.group("none") or m.group("other"):
            claims.append(ChangeClaim(NONE if m.group("none") else OTHER, None, None))
            continue
        if m.group("shape"):
            last_subject = (m.group("color"), m.group("shape"))
        subject = last_subject
        if m.group("move"):
            claims += [ChangeClaim("move", subject, _CELLS[re.sub(r"\s+", " ", c)])
                       for c in _LIST_ITEM_CELL.findall(m.group("cells"))]
        elif m.group("grow"):
            claims.append(ChangeClaim("grow", subject, "big"))
        elif m.group("shrink"):
            claims.append(ChangeClaim("shrink", subject, "small"))
        elif m.group("recolor"):
            claims += [ChangeClaim("recolor", subject, c) for c in re.findall(_ALT(COLORS), m.group("colors"))]
        elif m.group("appear"):
            size = m.group("size") if m.group("shape") else None
            cells = [_CELLS[re.sub(r"\s+", " ", c)] for c in _LIST_ITEM_CELL.findall(m.group("where") or "")]
            claims += [ChangeClaim("appear", subject, (size, *cell)) for cell in cells or [(None, None)]]
        else:
            claims.append(ChangeClaim("disappear", subject, None))
    return claims


def change_scores(truth: Change, text: str) -> dict[str, float]:
    """How well a video description states a clip's one change: `precision` (claimed
    changes that are the true one), `recall` (1.0 when the true change is claimed), `f1` and
    `exact` (1.0 when exactly the true change, and nothing else, is claimed). A claim
    matches only when its kind, subject and target all agree (`parse_changes`,
    `change_claim`); a description claiming no change scores 0.0 everywhere."""
    return _multiset_scores(Counter([change_claim(truth)]), Counter(parse_changes(text)))


# Confidence intervals.

def _z(level: float) -> float:
    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion `successes / n` (z = 1.96: 95%). `successes`
    may be fractional (a mean times n). With n = 0 there is no evidence and no estimate:
    (0.0, 0.0), matching `mean` of no values."""
    if n <= 0:
        return 0.0, 0.0
    p = min(1.0, max(0.0, successes / n))
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if p == 0.0 else max(0.0, centre - half)
    high = 1.0 if p == 1.0 else min(1.0, centre + half)
    return float(low), float(high)


def bootstrap_interval(values: Sequence, statistic: Callable[[list], float] = mean, resamples: int = 1000,
                       seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic(values)`, resampling items with
    replacement. `values` may be numbers or per-item records, and `statistic` any function of
    a list of them (e.g. a corpus WER over (reference, hypothesis) pairs). Deterministic for
    a `seed`. No values: (0.0, 0.0); one value: (s, s) with s = statistic(values)."""
    items = list(values)
    if not items:
        return 0.0, 0.0
    if len(items) == 1 or resamples < 1:
        value = float(statistic(items))
        return value, value
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, len(items), size=(resamples, len(items)))
    if statistic is mean and all(isinstance(v, int | float | np.number) for v in items):
        stats = np.asarray(items, dtype=np.float64)[indices].mean(axis=1)
    else:
        stats = np.array([statistic([items[i] for i in row]) for row in indices], dtype=np.float64)
    alpha = (1 - level) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return float(low), float(high)


def paired_difference_interval(a: Sequence[float], b: Sequence[float], resamples: int = 1000, seed: int = 0,
                               level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a) - mean(b) for two systems scored on the same
    items (`a[i]`, `b[i]`: item i), resampling items jointly so that per-item difficulty
    cancels. No items: (0.0, 0.0); one item: (d, d). Raises ValueError on unequal lengths."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need equal lengths, got {len(a)} and {len(b)}")
    differences = [float(x) - float(y) for x, y in zip(a, b)]
    return bootstrap_interval(differences, mean, resamples=resamples, seed=seed, level=level)


def mean_interval(values: Sequence[float], level: float = 0.95, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """An interval for the mean of per-item scores: Wilson when every value is 0 or 1 (a
    proportion), otherwise the percentile bootstrap. No values: (0.0, 0.0)."""
    items = [float(v) for v in values]
    if all(v in (0.0, 1.0) for v in items):
        return wilson_interval(sum(items), len(items), _z(level))
    return bootstrap_interval(items, mean, resamples=resamples, seed=seed, level=level)
