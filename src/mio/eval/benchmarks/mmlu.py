"""MMLU, 5-shot, scored by the option letter of the reply.

Layout under DATA (the original release, or its `data/` folder itself):
`data/dev/{subject}_dev.csv` and `data/test/{subject}_test.csv`, CSV without a header:
question, A, B, C, D, answer letter. The shots of a subject are the first five rows of its
dev file.

The prompt is the standard one: `The following are multiple choice questions (with
answers) about {subject}.\\n\\n`, then each shot as `{question}\\nA. ...\\nB. ...\\nC.
...\\nD. ...\\nAnswer: X\\n\\n`, then the test question ending `Answer:`. Shots are dropped
from the end while the prompt does not fit the model's context (as the original
evaluation does). Instruction-tuned checkpoints get it as the user turn, base checkpoints
continue it. The letter is read with `mio.eval.metrics.mcq_letter`; accuracy over all
questions (the paper's number), per subject, and the share of replies with a letter. The
blind baseline answers every question with the most frequent letter of the test items.

Items are ordered round-robin over the subjects in alphabetical order (question 1 of every
subject, then question 2, ...), so `--limit` samples every subject.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from mio.eval import metrics
from mio.eval.benchmarks.common import Asker, interval, most_frequent, require_file, take
from mio.eval.suites import text_of

SHOTS = 5
LETTERS = ("A", "B", "C", "D")
ANSWER_TOKENS = 8
HEADER = "The following are multiple choice questions (with answers) about {subject}.\n\n"


@dataclass(frozen=True)
class Question:
    """One multiple-choice question: text, four options, answer letter."""

    subject: str
    question: str
    options: tuple[str, str, str, str]
    answer: str

    def render(self, with_answer: bool) -> str:
        """The question in the MMLU format, ending `Answer:` (with ` X\\n\\n` when answered)."""
        text = self.question + "".join(f"\n{letter}. {option}" for letter, option in zip(LETTERS, self.options))
        return text + "\nAnswer:" + (f" {self.answer}\n\n" if with_answer else "")


@dataclass(frozen=True)
class MCQItem:
    """A test question and the dev questions of its subject (the shots)."""

    id: str
    question: Question
    shots: tuple[Question, ...]

    def prompt(self, shots: int) -> str:
        """The prompt with the first `shots` shots."""
        header = HEADER.format(subject=self.question.subject.replace("_", " "))
        return header + "".join(s.render(True) for s in self.shots[:shots]) + self.question.render(False)


def read_questions(path: Path, subject: str) -> list[Question]:
    """The rows of one MMLU CSV file."""
    questions = []
    with open(require_file(path, "MMLU question file"), newline="", encoding="utf-8") as f:
        for number, row in enumerate(csv.reader(f), 1):
            if len(row) != 6 or row[5].strip() not in LETTERS:
                raise ValueError(f"{path}: row {number} is not question, A, B, C, D, answer letter")
            questions.append(Question(subject, row[0], (row[1], row[2], row[3], row[4]), row[5].strip()))
    return questions


def data_folder(data: Path) -> Path:
    """The folder holding `dev/` and `test/`: DATA/data or DATA."""
    for folder in (data / "data", data):
        if (folder / "test").is_dir():
            return folder
    raise FileNotFoundError(f"{data / 'data' / 'test'}: MMLU test folder not found")


def load_items(data: Path, limit: int | None = None) -> tuple[list[MCQItem], str]:
    """The first `limit` test questions (round-robin over subjects) and the most frequent
    answer letter of all test questions."""
    folder = data_folder(data)
    per_subject = []
    for path in sorted((folder / "test").glob("*_test.csv")):
        subject = path.name.removesuffix("_test.csv")
        shots = tuple(read_questions(folder / "dev" / f"{subject}_dev.csv", subject)[:SHOTS])
        per_subject.append([MCQItem(f"{subject}/{k}", q, shots) for k, q in enumerate(read_questions(path, subject))])
    if not per_subject:
        raise FileNotFoundError(f"{folder / 'test'}: no {{subject}}_test.csv files")
    ordered = [items[k] for k in range(max(map(len, per_subject))) for items in per_subject if k < len(items)]
    return take(ordered, limit), most_frequent(i.question.answer for i in ordered)


def fitted_prompt(asker: Asker, item: MCQItem) -> tuple[str, int]:
    """The prompt with as many shots (at most `SHOTS`) as leave `ANSWER_TOKENS` in the
    model's context, and that number of shots."""
    context = asker.model.context_length
    shots = len(item.shots)
    while True:
        prompt = item.prompt(shots)
        ids = asker.model.complete_prompt(prompt) if asker.base else \
            asker.model.chat_prompt([{"role": "user", "content": prompt}])
        if shots == 0 or len(ids) + ANSWER_TOKENS <= context:
            return prompt, shots
        shots -= 1


def score(items: list[MCQItem], replies: list[str]) -> dict:
    """Accuracy over all questions and per subject (each with its interval), and the share
    of replies that give a letter."""
    letters = [metrics.mcq_letter(r) for r in replies]
    correct = [float(letter == i.question.answer) for i, letter in zip(items, letters)]
    answered = [float(letter is not None) for letter in letters]
    result = {"accuracy": metrics.mean(correct), "answered": metrics.mean(answered)}
    ci95 = {"accuracy": interval(correct), "answered": interval(answered)}
    for subject in sorted({i.question.subject for i in items}):
        hits = [c for i, c in zip(items, correct) if i.question.subject == subject]
        result[f"accuracy/{subject}"] = metrics.mean(hits)
        ci95[f"accuracy/{subject}"] = interval(hits)
    return {**result, "ci95": ci95}


def run(asker: Asker, data: Path, limit: int | None) -> dict:
    items, letter = load_items(data, limit)
    prompts, shots = zip(*(fitted_prompt(asker, i) for i in items))
    replies = asker.ask([i.id for i in items], [[p] for p in prompts], "text", ANSWER_TOKENS)
    result = score(items, [text_of(r) for r in replies])
    result["shots"] = metrics.mean(shots)
    result["baselines"] = {"most_frequent_letter": {"accuracy": score(items, [letter] * len(items))["accuracy"]}}
    return {**result, "n": len(items)}
