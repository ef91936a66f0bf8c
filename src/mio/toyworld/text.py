"""Language-only text about the world: facts, counting, colour mixing, simple arithmetic,
and multiple-choice questions in the MMLU format.

Every question has one short, checkable answer. `qa` draws a (question, answer) pair,
`document` a pre-training paragraph of facts and worked examples, `mcq` a question with
four options (`format_mcq` writes it the way MMLU prompts are written:
question, `A. ...` to `D. ...`, then `Answer:`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mio.toyworld.scenes import SHAPES

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
                "nineteen", "twenty")
MAX_OPERAND = 10
# Which two palette colours mix into which (paint mixing, restricted to the palette).
MIXES = {("red", "yellow"): "orange", ("blue", "yellow"): "green", ("red", "blue"): "purple"}
CORNERS = {"circle": 0, "square": 4, "triangle": 3, "cross": 12}
OPTION_LETTERS = ("A", "B", "C", "D")
SENTENCES_PER_DOC = (3, 6)


def plural(noun: str) -> str:
    """`circles`, `crosses`."""
    return noun + ("es" if noun.endswith("s") else "s")


@dataclass(frozen=True)
class MCQ:
    """A multiple-choice question: four options, one right."""

    question: str
    options: tuple[str, ...]
    answer: int
    """Index of the right option."""

    @property
    def letter(self) -> str:
        """The right option's letter."""
        return OPTION_LETTERS[self.answer]


def _arithmetic(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(0, MAX_OPERAND), rng.randint(0, MAX_OPERAND)
    if rng.random() < 0.5:
        return f"What is {a} plus {b}?", str(a + b)
    a, b = max(a, b), min(a, b)
    return f"What is {a} minus {b}?", str(a - b)


def _mixing(rng: random.Random) -> tuple[str, str]:
    (c1, c2), result = rng.choice(sorted(MIXES.items()))
    if rng.random() < 0.5:
        c1, c2 = c2, c1
    return f"What colour do {c1} and {c2} make?", result


def _corners(rng: random.Random) -> tuple[str, str]:
    shape = rng.choice(SHAPES)
    return f"How many corners does a {shape} have?", str(CORNERS[shape])


def _counting(rng: random.Random) -> tuple[str, str]:
    target = rng.choice(SHAPES)
    items = [rng.choice(SHAPES) for _ in range(rng.randint(2, 6))]
    return f"How many {plural(target)} are in this list: {', '.join(items)}?", str(items.count(target))


def _compare(rng: random.Random) -> tuple[str, str]:
    a, b = rng.sample(range(MAX_OPERAND + 1), 2)
    if rng.random() < 0.5:
        return f"Which is bigger, {a} or {b}?", str(max(a, b))
    return f"Which is smaller, {a} or {b}?", str(min(a, b))


QUESTION_KINDS = {"arithmetic": _arithmetic, "mixing": _mixing, "corners": _corners, "counting": _counting, "compare": _compare}


def qa(rng: random.Random, kind: str | None = None) -> tuple[str, str]:
    """A (question, short answer) pair; `kind` picks the family (default: any)."""
    return QUESTION_KINDS[kind or rng.choice(sorted(QUESTION_KINDS))](rng)


def _fact(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        (c1, c2), result = rng.choice(sorted(MIXES.items()))
        return f"{c1.capitalize()} and {c2} make {result}."
    if kind == 1:
        shape = rng.choice(SHAPES)
        return f"A {shape} has {CORNERS[shape]} corners."
    if kind == 2:
        a, b = rng.randint(0, MAX_OPERAND), rng.randint(0, MAX_OPERAND)
        return f"{a} plus {b} is {a + b}."
    n = rng.randint(1, MAX_OPERAND)
    return f"Counting to {n}: " + ", ".join(str(i) for i in range(1, n + 1)) + "."


def document(rng: random.Random) -> str:
    """A short pre-training paragraph: facts and question-answer lines, sometimes an MCQ."""
    sentences = []
    for _ in range(rng.randint(*SENTENCES_PER_DOC)):
        if rng.random() < 0.5:
            sentences.append(_fact(rng))
        else:
            q, a = qa(rng)
            sentences.append(f"Question: {q} Answer: {a}.")
    text = " ".join(sentences)
    if rng.random() < 0.3:
        item = mcq(rng)
        text += "\n\n" + format_mcq(item) + " " + item.letter
    return text


def _number_options(rng: random.Random, answer: int) -> list[str]:
    options = {answer}
    while len(options) < len(OPTION_LETTERS):
        options.add(max(0, answer + rng.randint(-3, 3)))
    return [str(o) for o in options]


def mcq(rng: random.Random) -> MCQ:
    """A multiple-choice question built from `qa`, with three plausible wrong options."""
    question, answer = qa(rng)
    if answer.isdigit():
        options = _number_options(rng, int(answer))
    else:  # a colour: the other results of mixing plus one primary colour
        pool = sorted((set(MIXES.values()) | {"red", "blue", "yellow"}) - {answer})
        options = [answer] + rng.sample(pool, len(OPTION_LETTERS) - 1)
    rng.shuffle(options)
    return MCQ(question, tuple(options), options.index(answer))


def format_mcq(item: MCQ) -> str:
    """The MMLU layout, ending in `Answer:` (the letter follows)."""
    lines = [item.question] + [f"{letter}. {option}" for letter, option in zip(OPTION_LETTERS, item.options)]
    return "\n".join(lines) + "\nAnswer:"
