"""VQAv2 (val split), scored by the official VQA accuracy.

Layout under DATA: `v2_OpenEnded_mscoco_val2014_questions.json` (`questions[]` with
`image_id`, `question`, `question_id`), `v2_mscoco_val2014_annotations.json`
(`annotations[]` with `question_id`, `answers[].answer`, `multiple_choice_answer`,
`answer_type`) and the images `val2014/COCO_val2014_{image_id:012d}.jpg`. Items are the
questions in file order. (test-dev has no public answers: it is scored by the EvalAI
server, not here.)

Instruction-tuned checkpoints are asked `{image} {question}\\nAnswer the question using a
single word or phrase.` (Table 12); base checkpoints have no pre-training template for
questions and the benchmark is skipped for them. The score is the official one
(`vqa_score`, a port of `vqaEval.py` of GT-Vision-Lab/VQA), overall and per answer type.
The blind baseline answers every question with the most frequent answer of the split.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mio.eval import metrics
from mio.eval.benchmarks.common import Asker, BenchmarkSkipped, interval, most_frequent, read_json, require_file, take
from mio.eval.suites import text_of
from mio.prompts import instruction
from mio.segments import Image

QUESTIONS_FILE = "v2_OpenEnded_mscoco_val2014_questions.json"
ANNOTATIONS_FILE = "v2_mscoco_val2014_annotations.json"
IMAGE_PATH = "val2014/COCO_val2014_{image_id:012d}.jpg"
ANSWER_TOKENS = 16

# The official answer normalisation (vqaEval.py).
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd", "howll": "how'll",
    "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd",
    "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've",
    "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
            "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = {"a", "an", "the"}
_PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_PERIOD = re.compile(r"\.(?!\d)")  # the official `(?!<=\d)(\.)(?!\d)`: its first group never excludes anything
_DIGIT_COMMA = re.compile(r"(\d)(,)(\d)")
AGREEMENT = 3
"""An answer given by this many of the other annotators counts fully."""


def process_punctuation(text: str) -> str:
    """The official punctuation rule: a mark next to a space (or any mark, when the text has a
    comma between digits) is removed, otherwise it becomes a space; periods not followed by
    a digit are removed."""
    out = text
    for mark in _PUNCTUATION:
        if mark + " " in text or " " + mark in text or _DIGIT_COMMA.search(text):
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out)


def process_digits_articles(text: str) -> str:
    """The official word rule: lowercase, number words to digits, no articles, contractions
    given their apostrophe."""
    words = [_NUMBERS.get(w, w) for w in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def vqa_score(prediction: str, answers: Sequence[str]) -> float:
    """The official VQA accuracy of one prediction against the annotators' answers: for each
    annotator, min(1, matches among the others / 3), averaged. The prediction is normalised
    (whitespace, punctuation, digits, articles); the answers get the punctuation rule when
    they are not all the same, exactly as vqaEval.py does. A single answer (not VQAv2's
    ten) is matched exactly."""
    if not answers:
        raise ValueError("vqa_score needs at least one answer")
    prediction = process_digits_articles(process_punctuation(prediction.replace("\n", " ").replace("\t", " ").strip()))
    answers = [a.replace("\n", " ").replace("\t", " ").strip() for a in answers]
    if len(set(answers)) > 1:
        answers = [process_punctuation(a) for a in answers]
    matches = [a == prediction for a in answers]
    if len(answers) == 1:
        return float(matches[0])
    total = sum(matches)
    return sum(min(1.0, (total - m) / AGREEMENT) for m in matches) / len(answers)


@dataclass(frozen=True)
class QuestionItem:
    """One question, its image, the annotators' answers and the answer type."""

    id: str
    image: Path
    question: str
    answers: list[str]
    answer_type: str


def _item(data: Path, question: dict, annotations: dict[int, dict]) -> QuestionItem:
    if question["question_id"] not in annotations:
        raise ValueError(f"{data / ANNOTATIONS_FILE}: no annotation for question {question['question_id']}")
    annotation = annotations[question["question_id"]]
    image = require_file(data / IMAGE_PATH.format(image_id=question["image_id"]), "VQAv2 image")
    return QuestionItem(str(question["question_id"]), image, question["question"],
                        [a["answer"] for a in annotation["answers"]], annotation.get("answer_type", ""))


def load_items(data: Path, limit: int | None = None) -> tuple[list[QuestionItem], str]:
    """The first `limit` questions (file order) and the split's most frequent answer."""
    questions = read_json(data / QUESTIONS_FILE, "the VQAv2 questions file")
    annotations = read_json(data / ANNOTATIONS_FILE, "the VQAv2 annotations file")
    try:
        by_id = {a["question_id"]: a for a in annotations["annotations"]}
        constant = most_frequent(a["multiple_choice_answer"] for a in annotations["annotations"])
        items = [_item(data, q, by_id) for q in take(questions["questions"], limit)]
    except (KeyError, TypeError) as e:
        raise ValueError(f"{data}: a VQAv2 file or record lacks {e} (see the VQAv2 layout)") from None
    if not items:
        raise ValueError(f"{data / QUESTIONS_FILE}: no questions")
    return items, constant


def score(items: list[QuestionItem], predictions: list[str]) -> dict:
    """VQA accuracy, overall and per answer type, with intervals."""
    scores = [vqa_score(p, i.answers) for i, p in zip(items, predictions)]
    result, ci95 = {"vqa_accuracy": metrics.mean(scores)}, {"vqa_accuracy": interval(scores)}
    for kind in sorted({i.answer_type for i in items if i.answer_type}):
        of_kind = [s for i, s in zip(items, scores) if i.answer_type == kind]
        result[f"vqa_accuracy/{kind}"], ci95[f"vqa_accuracy/{kind}"] = metrics.mean(of_kind), interval(of_kind)
    return {**result, "ci95": ci95}


def run(asker: Asker, data: Path, limit: int | None) -> dict:
    if asker.base:
        raise BenchmarkSkipped("VQAv2 has no pre-training template; it needs an instruction-tuned checkpoint")
    items, constant = load_items(data, limit)
    prompts = [[Image(image=str(i.image)), instruction("image_qa", question=i.question)] for i in items]
    replies = asker.ask([i.id for i in items], prompts, "text", ANSWER_TOKENS)
    result = score(items, [text_of(r) for r in replies])
    result["baselines"] = {"most_frequent_answer": {"vqa_accuracy": score(items, [constant] * len(items))["vqa_accuracy"]}}
    return {**result, "n": len(items)}
