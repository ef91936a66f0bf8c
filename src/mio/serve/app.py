"""The OpenAI-compatible HTTP app: `GET /health`, `GET /v1/models`, `POST /v1/chat/completions`.

    from mio.api import MIO
    from mio.serve import ServeConfig, create_app
    app = create_app(MIO.from_pretrained("runs/sft"), ServeConfig(model_name="mio", api_key="..."))

Requests are checked at the boundary (API key, body size, content type, JSON, fields, media,
decoding options) and refused with OpenAI's error body; only then do they wait for the
model (`mio.serve.worker`). Replies carry text in `message.content`, speech in
`message.audio` (base64 WAV, as OpenAI's audio models return it), pictures in
`message.images` (PNG data URIs; a video is one animated GIF). Any unexpected failure is
logged and answered with 500: no request can take the server down.
"""

from __future__ import annotations

import base64
import hmac
import io
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
import torch
from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from mio.api import MIO
from mio.generate import MAX_SEED, check_integer
from mio.media.content_parts import ContentError, segment_from_part
from mio.segments import Image, Malformed, Message, Segment, Speech, Text, Video
from mio.serve.protocol import (
    AudioOutput,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChunkChoice,
    Delta,
    ErrorDetail,
    ErrorResponse,
    ImagePart,
    ImageURL,
    ModelCard,
    ModelList,
    ReplyMessage,
    Usage,
    completion_id,
)
from mio.serve.worker import MAX_BATCH, ChatJob, QueueFull, Worker, decoding_options

log = logging.getLogger(__name__)

AUDIO_LIFETIME_S = 3600
"""`message.audio.expires_at` is this far ahead (MIO keeps no audio; the field is OpenAI's)."""
VIDEO_FPS = 2.0
SERVER_START_TIMEOUT_S = 60.0


@dataclass
class ServeConfig:
    """How the app answers: the model's id, the API key (None: open), the largest request
    body, how many requests may wait, how many decode together, and the folders
    `image_url`, `video_url` and video frames may name files in."""

    model_name: str = "mio"
    api_key: str | None = None
    max_body_bytes: int = 32 * 2**20
    queue_size: int = 16
    max_batch: int = MAX_BATCH
    allow_paths: Sequence[Path] = ()


class APIError(Exception):
    """A request refused with an HTTP status and OpenAI's error body."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def response(self) -> JSONResponse:
        body = ErrorResponse(error=ErrorDetail(message=self.message, type=self.type, param=self.param, code=self.code))
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(body.model_dump(), status_code=self.status, headers=headers)


def worker_app(worker: Worker) -> FastAPI:
    """An empty app that runs `worker` while it is up; `app.state.worker` (what the web UI,
    mounted beside the API, shares)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        worker.start()
        yield
        await run_in_threadpool(worker.close)

    app = FastAPI(title="MIO", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.worker = worker
    return app


@contextmanager
def running_server(app: FastAPI, host: str = "127.0.0.1") -> Iterator[str]:
    """Run `app` with uvicorn on a free port of `host` in a background thread (benchmarks and
    tests); yields its base URL and stops the server on exit."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def create_app(mio: MIO, config: ServeConfig) -> FastAPI:
    """The FastAPI app serving `mio` (its worker thread runs while the app is up)."""
    app = worker_app(Worker(mio, config.queue_size, config.max_batch))
    worker = app.state.worker
    allow_paths = tuple(Path(p).resolve() for p in config.allow_paths)
    created = int(time.time())

    def authorize(request: Request) -> None:
        if config.api_key is None:
            return
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        # compare_digest: the time taken does not reveal how much of the key matched.
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), config.api_key.encode()):
            raise APIError(401, "missing or wrong API key (send 'Authorization: Bearer KEY')",
                           type="authentication_error", code="invalid_api_key")

    @app.exception_handler(APIError)
    async def _api_error(_request: Request, e: APIError) -> JSONResponse:
        return e.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, e: StarletteHTTPException) -> JSONResponse:
        return APIError(e.status_code, str(e.detail), code=None if e.status_code < 500 else "server_error").response()

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, e: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return _internal(e).response()

    @app.get("/health")
    async def health() -> dict:
        """Liveness, open without a key."""
        return {"status": "ok", "model": config.model_name}

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def models() -> dict:
        """The one loaded model."""
        return ModelList(data=[ModelCard(id=config.model_name, created=created)]).model_dump()

    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)])
    async def chat_completions(request: Request):
        """A chat completion, whole or streamed as server-sent events."""
        body = await _read_json(request, config.max_body_bytes)
        req = _parse_request(body)
        if req.model is not None and req.model != config.model_name:
            raise APIError(404, f"the model {req.model!r} does not exist; this server has {config.model_name!r}",
                           param="model", code="model_not_found")
        try:
            job = await run_in_threadpool(_job, req, allow_paths)
        except APIError:
            raise
        except ValueError as e:
            raise APIError(400, str(e)) from None
        reply = worker.stream(job)
        first = await _next(reply)  # waits its turn; refusals (queue, inputs) come before any reply is sent
        cid = completion_id()
        if req.stream:
            usage = req.stream_options is not None and req.stream_options.include_usage
            return StreamingResponse(_events(cid, config.model_name, first, reply, job, usage),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        segments = [] if first is None else [first]
        while (seg := await _next(reply)) is not None:
            segments.append(seg)
        log.info("%s: %d segments, %s", cid, len(segments), job.usage)
        choice = Choice(message=_message(segments), finish_reason=job.finish_reason or "stop")
        completion = ChatCompletion(id=cid, model=config.model_name, choices=[choice], usage=_usage(job))
        return JSONResponse(completion.model_dump(exclude_none=True))

    return app


# ---------------------------------------------------------------- requests


async def _read_json(request: Request, limit: int) -> dict:
    """The body as a JSON object, refusing wrong content types, bodies over `limit` bytes
    (before reading them when the client declares the length) and malformed JSON."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise APIError(400, f"the body must be JSON (Content-Type: application/json), got {kind or 'no content type'!r}")
    declared = request.headers.get("content-length", "")
    too_big = APIError(413, f"the request body is larger than the server's limit of {limit} bytes",
                       code="request_too_large")
    if declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(400, f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise APIError(400, f"the body must be a JSON object, got a {type(body).__name__}")
    return body


def _parse_request(body: dict) -> ChatCompletionRequest:
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        if err["type"] == "extra_forbidden":
            message = f"unrecognized request argument supplied: {param}"
        else:
            message = re.sub(r"^Value error, ", "", err["msg"])
            message = f"{param}: {message}" if param else message
        raise APIError(400, message, param=param) from None


def _segment(part, allow_paths: tuple[Path, ...]) -> Segment:
    """One content part; `image_url`, `video_url` and video frames may name files only inside
    an allowed folder."""
    if not isinstance(part, dict):
        raise ContentError(f"a content part is an object, got a {type(part).__name__}")
    refs = [part.get("image_url"), part.get("video_url")]
    frames = part.get("video")
    urls = [r.get("url") if isinstance(r, dict) else r for r in refs] + (frames if isinstance(frames, list) else [])
    paths = [u for u in urls if isinstance(u, str) and not u.startswith("data:") and "://" not in u]
    if paths and allow_paths:
        for url in paths:
            if not any(Path(url).resolve().is_relative_to(folder) for folder in allow_paths):
                raise ContentError(f"{url!r} is outside the folders this server may read")
        return segment_from_part(part, allow_paths=True)
    return segment_from_part(part, allow_paths=False)


def _messages(messages: list[ChatMessage], allow_paths: tuple[Path, ...]) -> list[Message]:
    out = []
    for k, m in enumerate(messages):
        role = "system" if m.role == "developer" else m.role
        if m.content is None or isinstance(m.content, str):
            out.append(Message(role, m.content or ""))
            continue
        segments = []
        for j, part in enumerate(m.content):
            try:
                segments.append(_segment(part, allow_paths))
            except ValueError as e:  # ContentError, and the image and audio loaders' errors
                param = f"messages.{k}.content.{j}"
                raise APIError(400, f"{param}: {e}", param=param, code="invalid_content") from None
        out.append(Message(role, segments))
    return out


def _job(req: ChatCompletionRequest, allow_paths: tuple[Path, ...]) -> ChatJob:
    """The chat to run, with media decoded and decoding options checked (ValueError -> 400)."""
    messages = _messages(req.messages, allow_paths)
    wants_audio = req.modalities is not None and "audio" in req.modalities
    mode = req.mode or ("voice" if wants_audio else "std")
    output = req.output_modalities
    if output is None and req.modalities == ["text"]:
        output = ["text"]
    decoding, overrides = decoding_options(req.temperature, req.top_p, req.max_new_tokens)
    try:
        decoding.override(**overrides).validate()
        if req.seed is not None:
            check_integer("seed", req.seed, 0, MAX_SEED)
    except ValueError as e:
        param = next((p for p in ("temperature", "top_p", "max_new_tokens", "seed") if p in str(e)), None)
        param = {"max_new_tokens": "max_tokens"}.get(param, param)
        raise APIError(400, str(e).replace("max_new_tokens", "max_tokens"), param=param) from None
    return ChatJob(messages, mode, output, decoding, req.seed, overrides, tuple(req.stop_strings))


async def _next(reply: AsyncIterator[Segment]) -> Segment | None:
    """The next segment of a reply (None at its end), failures as APIErrors."""
    try:
        return await anext(reply)
    except StopAsyncIteration:
        return None
    except QueueFull as e:
        raise APIError(429, str(e), type="rate_limit_error", code="queue_full") from None
    except ValueError as e:  # the model's checks of inputs and decoding options
        raise APIError(400, str(e)) from None
    except Exception as e:
        log.exception("generation failed")
        raise _internal(e) from None


def _internal(e: Exception) -> APIError:
    return APIError(500, f"internal error: {type(e).__name__}: {e}", type="server_error", code="server_error")


# ---------------------------------------------------------------- replies


def _data_uri(image, fmt: str, **save) -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buf.getvalue()).decode()}"


def _image_part(seg: Image | Video) -> ImagePart | None:
    """A PNG data URI for an image, an animated GIF for a video; None for codes without pixels."""
    if isinstance(seg, Image):
        return None if seg.image is None else ImagePart(image_url=ImageURL(url=_data_uri(seg.image, "PNG")))
    if not seg.frames or any(f.image is None for f in seg.frames):
        return None
    frames = [f.image.convert("RGB") for f in seg.frames]
    url = _data_uri(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=round(1000 / VIDEO_FPS), loop=0)
    return ImagePart(image_url=ImageURL(url=url))


def _audio(speech: list[Speech]) -> AudioOutput | None:
    """Speech segments as one WAV (OpenAI's replies have one audio); None when none has a waveform."""
    voiced = [s for s in speech if s.wave is not None]
    if not voiced:
        return None
    wave = torch.cat([s.wave.detach().cpu().float().flatten() for s in voiced if s.sample_rate == voiced[0].sample_rate])
    buf = io.BytesIO()
    sf.write(buf, wave.numpy(), voiced[0].sample_rate, format="WAV", subtype="PCM_16")
    return AudioOutput(id=f"audio_{uuid.uuid4().hex}", data=base64.b64encode(buf.getvalue()).decode(),
                       expires_at=int(time.time()) + AUDIO_LIFETIME_S)


def _unusable(seg: Segment) -> None:
    if isinstance(seg, Malformed):
        log.warning("the model wrote a malformed %s block (%s); left out of the reply", seg.modality, seg.reason)
    else:
        log.warning("a generated %s has codes only (no decoder); left out of the reply", type(seg).__name__.lower())


def _message(segments: list[Segment]) -> ReplyMessage:
    """A whole reply as an assistant message: text, one audio, images."""
    images = []
    for seg in segments:
        if isinstance(seg, (Image, Video)):
            if (part := _image_part(seg)) is not None:
                images.append(part)
            else:
                _unusable(seg)
        elif isinstance(seg, Malformed) or (isinstance(seg, Speech) and seg.wave is None):
            _unusable(seg)
    return ReplyMessage(content="".join(s.text for s in segments if isinstance(s, Text)),
                        audio=_audio([s for s in segments if isinstance(s, Speech)]), images=images or None)


def _delta(seg: Segment) -> Delta | None:
    if isinstance(seg, Text):
        return Delta(content=seg.text)
    if isinstance(seg, (Image, Video)) and (part := _image_part(seg)) is not None:
        return Delta(images=[part])
    if isinstance(seg, Speech) and (audio := _audio([seg])) is not None:
        return Delta(audio=audio)
    _unusable(seg)
    return None


def _usage(job: ChatJob) -> Usage | None:
    u = job.usage
    return None if u is None else Usage(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                                        total_tokens=u.total_tokens)


async def _events(cid: str, model: str, first: Segment | None, reply: AsyncIterator[Segment], job: ChatJob,
                  include_usage: bool) -> AsyncIterator[str]:
    """Server-sent `chat.completion.chunk` events: the role, one per text piece or media
    segment, the finish reason, the token counts if asked (a chunk with no choices, as
    OpenAI sends it), then `[DONE]`. A failure after the first event can no longer change
    the status, so it is sent as an error event."""
    def event(delta: Delta, finish: str | None = None) -> str:
        chunk = ChatCompletionChunk(id=cid, model=model, choices=[ChunkChoice(delta=delta, finish_reason=finish)])
        return f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"

    yield event(Delta(role="assistant", content=""))
    seg = first
    try:
        while seg is not None:
            if (delta := _delta(seg)) is not None:
                yield event(delta)
            seg = await _next(reply)
        yield event(Delta(), job.finish_reason or "stop")
        if include_usage:
            chunk = ChatCompletionChunk(id=cid, model=model, choices=[], usage=_usage(job))
            yield f"data: {chunk.model_dump_json(exclude_none=True)}\n\n"
    except APIError as e:
        yield f"data: {e.response().body.decode()}\n\n"
    finally:
        await reply.aclose()
    yield "data: [DONE]\n\n"
