"""The prompts of every task, in one place: the toyworld analogues of the paper's SFT
evaluation templates (Table 12), used both to build SFT conversations
(`mio.toyworld.tasks`) and to query instruction-tuned checkpoints (`mio.eval.suites`), and
the pre-training templates (Appendix B, `mio.templates.PRETRAIN_TEMPLATES`) used to query
base checkpoints by plain continuation.

`{question}`, `{caption}`, `{text}`, ... are filled by the task; media are placed by the task
(the prompt text follows the medium in the user turn, except in edits, where the instruction
comes first so that each source code sits a fixed distance before its copy).
"""

from __future__ import annotations

from mio.segments import Segment, Text
from mio.templates import PRETRAIN_TEMPLATES

SHORT_ANSWER = "Answer the question using a single word or phrase."

INSTRUCTIONS = {
    # Table 12 analogues (the paper's wording where the paper has the task).
    "image_captioning": "Provide a one-sentence caption for the provided image.",
    "image_qa": "{question}\n" + SHORT_ANSWER,
    "chart": "{question}\n" + SHORT_ANSWER,
    "mcq": "{question}\nAnswer with the option's letter from the given choices directly.",
    "language": "{question}\n" + SHORT_ANSWER,
    "mcot": "{question}\nThink step by step, then give the answer after \"The answer is\".",
    "image_generation": "Please generate an image according to the description: {caption}",
    "image_editing": "Please edit the image as follows: {instruction}",
    "asr": "Please transcribe this speech.",
    "tts": "Please read the following text aloud: {text}",
    "speech_understanding": SHORT_ANSWER,
    "video_captioning": "Please describe this video.",
    "video_understanding": "{question}\n" + SHORT_ANSWER,
    "video_generation": "Please generate a video according to the description: {description}",
    "storytelling": "Please draw one picture for each numbered sentence of this story: {story}",
    "covt": "Imagine this change: {instruction} {question}\n"
    "Draw the changed picture first, then answer using a single word or phrase.",
}
"""Instruction per task. Tasks without an entry take no instruction: in-context learning
(the examples are the prompt), spoken questions and speech-to-speech (the speech is the
prompt) and speech generation (the text question is the prompt, voice mode asks for speech)."""

ANSWER_MARKER = "The answer is"
"""Chain-of-thought answers end with `The answer is X.`"""

ICL_ANSWER = "Answer: {answer}"
"""How each in-context example is answered."""


def instruction(task: str, **fields: str) -> str:
    """The instruction of `task` with its fields filled."""
    return INSTRUCTIONS[task].format(**fields)


BASE_TEMPLATES = {
    "image_captioning": "image_caption",
    "image_generation": "image_generation",
    "video_captioning": "video_caption",
    "video_generation": "video_generation",
    "asr": "asr",
    "tts": "tts",
}
"""Suites a base checkpoint is asked through a pre-training template (suite -> template)."""


def base_prompt(template: str, media: Segment | None = None, text: str = "") -> list[Segment]:
    """The continuation prompt of a pre-training template: everything before the target.

    A template whose target is text (`{media} ... is: {text}`) is cut before the text, with
    the trailing space left to the text's first token as in training; one whose target is
    the medium (`... of ``{text}'': {media}`) is cut before the medium."""
    pattern = PRETRAIN_TEMPLATES[template]
    before, after = pattern.split("{media}")
    if "{text}" in after:  # the medium is the input, the text the target
        if media is None:
            raise ValueError(f"template {template!r} needs the input medium")
        parts = [Text(before), media, Text(after.split("{text}")[0].rstrip())]
        return [p for p in parts if not isinstance(p, Text) or p.text]
    return [Text(before.format(text=text))]
