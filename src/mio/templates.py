"""MIO's prompt formats: the Yi chat template, the two system prompts, and the
pre-training templates of the paper's Appendix B.

Everything here is string-level and byte-identical to what the released MIO-7B checkpoints
expect. `mio.data.encode` builds the same sequences at id level with loss masks.
"""

from __future__ import annotations

STD_SYSTEM = (
    "You are MIO, an AI assistant capable of understanding and generating images, text, videos, "
    "and speech, selecting the appropriate modality according to the context."
)
VOICE_SYSTEM = (
    "You are MIO, an AI assistant capable of understanding images, text, videos, and speech, and "
    "generating speech. Please respond to the user with speech only, starting with <spch> and "
    "ending with </spch>."
)
SYSTEM_PROMPTS = {"std": STD_SYSTEM, "voice": VOICE_SYSTEM}
MODES = ("std", "voice", "custom")

TURN_START = "<|im_start|>{role}\n"
TURN_END = "<|im_end|>"
TURN_SEPARATOR = "\n"
GENERATION_PROMPT = "<|im_start|>assistant\n"

# Appendix B pre-training templates. `{media}` is where the image / video / speech block goes.
# The released code writes the quotes as ``...''; the paper typesets them as curly quotes.
OPEN_QUOTE, CLOSE_QUOTE = "``", "''"
PRETRAIN_TEMPLATES = {
    "image_caption": "{media} The caption of this image is: {text}",
    "image_generation": "Please generate an image of " + OPEN_QUOTE + "{text}" + CLOSE_QUOTE + ": {media}",
    "video_caption": "Please describe the following video: {media} {text}",
    "video_generation": "Please generate a video for " + OPEN_QUOTE + "{text}" + CLOSE_QUOTE + ": {media}",
    "asr": "{media} Transcribe this speech: {text}",
    "asr_stage3": "{media} The transcription of this speech is: {text}",
    "tts": "Please generate a speech of " + OPEN_QUOTE + "{text}" + CLOSE_QUOTE + ": {media}",
}


def system_prompt(mode: str) -> str:
    """The system prompt of `std` or `voice` mode."""
    if mode not in SYSTEM_PROMPTS:
        raise ValueError(f"no built-in system prompt for mode {mode!r}; modes are {MODES}")
    return SYSTEM_PROMPTS[mode]


def chat_turns(messages: list[dict], mode: str = "std") -> list[tuple[str, object]]:
    """Validate messages and prepend the system turn for `mode`; returns (role, content) pairs.

    mode `std` / `voice` adds the built-in system prompt (messages must not have one);
    `custom` requires the first message to be the system message."""
    if mode not in MODES:
        raise ValueError(f"unknown chat mode {mode!r}; modes are {MODES}")
    turns = [(m["role"], m["content"]) for m in messages]
    if not turns:
        raise ValueError("a chat needs at least one message")
    for role, _ in turns:
        if role not in ("system", "user", "assistant"):
            raise ValueError(f"unknown message role {role!r}")
    has_system = turns[0][0] == "system"
    if mode == "custom" and not has_system:
        raise ValueError("mode 'custom' needs the first message to be the system message")
    if mode != "custom":
        if has_system:
            raise ValueError(f"mode {mode!r} supplies its own system prompt; use mode='custom' to set one")
        turns = [("system", system_prompt(mode))] + turns
    if any(role == "system" for role, _ in turns[1:]):
        raise ValueError("only the first message may be a system message")
    return turns


def render_chat(messages: list[dict], mode: str = "std", add_generation_prompt: bool = True) -> str:
    """Render a chat in the Yi template exactly as MIO-7B expects it (no BOS).

    `messages` are {"role", "content"} dicts with string content."""
    turns = chat_turns(messages, mode)
    for _, content in turns:
        if not isinstance(content, str):
            raise TypeError("render_chat takes string content; use mio.data.encode for segments")
    rendered = [TURN_START.format(role=role) + content + TURN_END for role, content in turns]
    if add_generation_prompt:
        rendered.append(GENERATION_PROMPT)
    return TURN_SEPARATOR.join(rendered)
