"""The wire format of the chat-completions API: OpenAI's field names, pydantic models.

Requests are validated strictly (no type coercion, no unknown top-level fields) so a
malformed request is refused with the field it got wrong instead of being half-understood.
Fields OpenAI defines that MIO cannot honour are refused when set to anything but their
neutral value; fields that only tag or route a request (`user`, `metadata`, ...) are accepted
and ignored. Replies add `message.images` (OpenAI has no image output in chat completions)
next to OpenAI's own `message.audio`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MIO_MODALITIES = ("text", "image", "video", "speech")
"""Values of the extra body field `output_modalities` (those of `mio.generate`)."""

# OpenAI fields that change what a reply means, with the one value MIO can honour.
_NEUTRAL = {
    "n": 1, "logprobs": False, "top_logprobs": None, "tools": None, "tool_choice": None, "functions": None,
    "function_call": None, "prediction": None, "web_search_options": None, "frequency_penalty": 0,
    "presence_penalty": 0, "logit_bias": None,
}


class Strict(BaseModel):
    """Unknown fields and wrong types are errors, never coerced or dropped."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ChatMessage(Strict):
    """One turn. `content`: a string, or content parts (`mio.media.content_parts`: text,
    image_url with a data URI, input_audio with base64 WAV/MP3)."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class AudioOptions(Strict):
    """OpenAI's `audio` request field: MIO has one voice per reply and writes WAV."""

    voice: str | dict[str, Any] | None = None
    format: Literal["wav"] = "wav"


class StreamOptions(Strict):
    """OpenAI's `stream_options`: `include_usage` adds a last chunk with the token counts."""

    include_usage: bool = False
    include_obfuscation: bool | None = None


class ChatCompletionRequest(Strict):
    """`POST /v1/chat/completions`: OpenAI's fields plus `mode` and `output_modalities`."""

    messages: list[ChatMessage] = Field(min_length=1)
    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    modalities: list[Literal["text", "audio"]] | None = None
    audio: AudioOptions | None = None
    # MIO's own: the chat mode and which modalities the reply may use.
    mode: Literal["std", "voice"] | None = None
    output_modalities: list[Literal["text", "image", "video", "speech"]] | None = None
    # OpenAI's, honoured only at their neutral value (see _NEUTRAL).
    n: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: Any = None
    tool_choice: Any = None
    functions: Any = None
    function_call: Any = None
    prediction: Any = None
    web_search_options: Any = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: Any = None
    response_format: dict[str, Any] | None = None
    # OpenAI's tags and routing hints: accepted, no effect on the reply.
    user: Any = None
    metadata: Any = None
    store: Any = None
    service_tier: Any = None
    parallel_tool_calls: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    safety_identifier: Any = None
    prompt_cache_key: Any = None
    prompt_cache_options: Any = None
    prompt_cache_retention: Any = None
    moderation: Any = None

    @model_validator(mode="after")
    def _supported(self) -> ChatCompletionRequest:
        for name, neutral in _NEUTRAL.items():
            value = getattr(self, name)
            if value is not None and value != neutral:
                raise ValueError(f"{name}={value!r} is not supported by this server")
        if self.response_format is not None and self.response_format.get("type") != "text":
            raise ValueError("response_format: only {'type': 'text'} is supported")
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ValueError("give max_tokens or max_completion_tokens, not both")
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("stop: at most 4 strings")
        if any(s == "" for s in self.stop_strings):
            raise ValueError("stop: strings must not be empty")
        return self

    @property
    def stop_strings(self) -> list[str]:
        """`stop` as a list."""
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def max_new_tokens(self) -> int | None:
        """The reply's token limit (`max_tokens` or its newer name)."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


# ---------------------------------------------------------------- replies


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body."""

    error: ErrorDetail


class ImageURL(BaseModel):
    url: str


class ImagePart(BaseModel):
    """A generated image (or a video as an animated GIF) as a data URI content part."""

    type: Literal["image_url"] = "image_url"
    image_url: ImageURL


class AudioOutput(BaseModel):
    """OpenAI's `message.audio`: base64 WAV; MIO has no transcript of its speech."""

    id: str
    data: str
    expires_at: int
    transcript: str = ""
    format: Literal["wav"] = "wav"


class ReplyMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    audio: AudioOutput | None = None
    images: list[ImagePart] | None = None


class Usage(BaseModel):
    """Tokens read and written: the chat's prompt, and the reply (stop token excluded)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Choice(BaseModel):
    index: int = 0
    message: ReplyMessage
    finish_reason: Literal["stop", "length"] = "stop"
    logprobs: None = None


class ChatCompletion(BaseModel):
    """`chat.completion`: the whole reply."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    audio: AudioOutput | None = None
    images: list[ImagePart] | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """`chat.completion.chunk`: one server-sent event of a streamed reply."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "mio"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def completion_id() -> str:
    """A fresh `chatcmpl-...` id."""
    return f"chatcmpl-{uuid.uuid4().hex}"
