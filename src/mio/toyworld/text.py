"""Language-only text about the world: facts, counting, colour mixing, simple arithmetic,
and multiple-choice questions in the MMLU format.

Every question has one short, checkable answer. `qa` draws a (question, answer) pair,
`document` a pre-training paragraph of facts and worked examples, `mcq` a question with
four options (`format_mcq` writes it the way MMLU prompts are written:
question, `A. ...` to `D. ...`, then `Answer:`).

Held-out questions: every question has a key, its normalised text (`normalize`), and an
arithmetic fact (`3 plus 4 is 7.`) has the key of the question it answers (`what is 3 plus
4?`). The draws take an `accept(kind, key)` predicate and draw again until it accepts, so a
world can keep a question out of training in any wording, fact included
(`mio.toyworld.world.HeldOut`); `question_keys` finds the keys in any text, for checking a
written corpus. Colour mixing and corners are facts of the world with 6 and 4 questions:
they are never held out (`HOLDABLE_KINDS`), so the model can learn them.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable
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
MAX_DRAWS = 1000
"""An `accept` predicate that rejects this many draws in a row is an error (a space too small)."""

Accept = Callable[[str, str], bool]
"""`accept(kind, key)`: whether a question of `kind` with `key` may be drawn."""


def normalize(text: str) -> str:
    """Lowercase, whitespace collapsed: the form prompts and questions are compared in."""
    return " ".join(text.lower().split())


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
HOLDABLE_KINDS = ("arithmetic", "compare", "counting")
"""Question families a test may hold out (the others are a handful of facts the model must learn)."""
SPACE_SIZES = {
    "arithmetic": (MAX_OPERAND + 1) ** 2 + (MAX_OPERAND + 1) * (MAX_OPERAND + 2) // 2,
    "compare": 2 * (MAX_OPERAND + 1) * MAX_OPERAND,
    "counting": len(SHAPES) * sum(len(SHAPES) ** n for n in range(2, 7)),
    "mixing": 2 * len(MIXES),
    "corners": len(CORNERS),
}
"""Distinct questions per family (arithmetic: a plus b, and a minus b with a >= b)."""


def question_space(kind: str) -> list[str]:
    """Every question of a family, normalised (their number is `SPACE_SIZES[kind]`)."""
    numbers = range(MAX_OPERAND + 1)
    if kind == "arithmetic":
        sums = [_sum_key(a, b) for a in numbers for b in numbers]
        return sums + [f"what is {a} minus {b}?" for a in numbers for b in range(a + 1)]
    if kind == "compare":
        return [f"which is {w}, {a} or {b}?" for w in ("bigger", "smaller") for a in numbers for b in numbers if a != b]
    if kind == "counting":
        lists = [", ".join(items) for n in range(2, 7) for items in itertools.product(SHAPES, repeat=n)]
        return [f"how many {plural(target)} are in this list: {items}?" for target in SHAPES for items in lists]
    if kind == "mixing":
        return [f"what colour do {a} and {b} make?" for pair in sorted(MIXES) for a, b in (pair, pair[::-1])]
    return [f"how many corners does a {shape} have?" for shape in SHAPES]


def qa(rng: random.Random, kind: str | None = None, accept: Accept | None = None) -> tuple[str, str]:
    """A (question, short answer) pair; `kind` picks the family (default: any), `accept`
    (kind, key) rejects draws (drawn again in the same family)."""
    kind = kind or rng.choice(sorted(QUESTION_KINDS))
    for _ in range(MAX_DRAWS):
        question, answer = QUESTION_KINDS[kind](rng)
        if accept is None or accept(kind, normalize(question)):
            return question, answer
    raise ValueError(f"question space {kind!r} ({SPACE_SIZES[kind]} questions): no question accepted in {MAX_DRAWS} draws")


def _fact(rng: random.Random, accept: Accept | None = None) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        (c1, c2), result = rng.choice(sorted(MIXES.items()))
        return f"{c1.capitalize()} and {c2} make {result}."
    if kind == 1:
        shape = rng.choice(SHAPES)
        return f"A {shape} has {CORNERS[shape]} corners."
    if kind == 2:
        for _ in range(MAX_DRAWS):
            a, b = rng.randint(0, MAX_OPERAND), rng.randint(0, MAX_OPERAND)
            if accept is None or accept("arithmetic", _sum_key(a, b)):
                return f"{a} plus {b} is {a + b}."
        raise ValueError(f"question space 'arithmetic': no fact accepted in {MAX_DRAWS} draws")
    n = rng.randint(1, MAX_OPERAND)
    return f"Counting to {n}: " + ", ".join(str(i) for i in range(1, n + 1)) + "."


def _sum_key(a: int | str, b: int | str) -> str:
    """The key of `What is a plus b?` (and of the fact `a plus b is c.`)."""
    return f"what is {a} plus {b}?"


def document(rng: random.Random, accept: Accept | None = None) -> str:
    """A short pre-training paragraph: facts and question-answer lines, sometimes an MCQ."""
    sentences = []
    for _ in range(rng.randint(*SENTENCES_PER_DOC)):
        if rng.random() < 0.5:
            sentences.append(_fact(rng, accept))
        else:
            q, a = qa(rng, accept=accept)
            sentences.append(f"Question: {q} Answer: {a}.")
    text = " ".join(sentences)
    if rng.random() < 0.3:
        item = mcq(rng, accept=accept)
        text += "\n\n" + format_mcq(item) + " " + item.letter
    return text


# Questions (and arithmetic facts) as they read in normalised text.
_KEY_PATTERNS = {
    "arithmetic": re.compile(r"\bwhat is \d+ (?:plus|minus) \d+\?"),
    "compare": re.compile(r"\bwhich is (?:bigger|smaller), \d+ or \d+\?"),
    "counting": re.compile(r"\bhow many [a-z]+ are in this list: [a-z]+(?:, [a-z]+)*\?"),
    "mixing": re.compile(r"\bwhat colou?r do [a-z]+ and [a-z]+ make\?"),
    "corners": re.compile(r"\bhow many corners does an? [a-z]+ have\?"),
}
_SUM_FACT = re.compile(r"(?<![\w.])(\d+) plus (\d+) is \d+\b")


def question_keys(text: str) -> set[tuple[str, str]]:
    """(kind, key) of every question and arithmetic fact in `text` (any text: a prompt, a
    document, a transcript)."""
    norm = normalize(text)
    keys = {(kind, m.group(0)) for kind, pattern in _KEY_PATTERNS.items() for m in pattern.finditer(norm)}
    keys |= {("arithmetic", _sum_key(m.group(1), m.group(2))) for m in _SUM_FACT.finditer(norm)}
    return keys


def _number_options(rng: random.Random, answer: int) -> list[str]:
    options = {answer}
    while len(options) < len(OPTION_LETTERS):
        options.add(max(0, answer + rng.randint(-3, 3)))
    return [str(o) for o in options]


def mcq(rng: random.Random, kind: str | None = None, accept: Accept | None = None) -> MCQ:
    """A multiple-choice question built from `qa`, with three plausible wrong options."""
    question, answer = qa(rng, kind, accept)
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
