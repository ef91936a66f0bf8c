"""The web UI: a multimodal chat with MIO in the browser (gradio), for `mio ui` and `mio serve --ui`.

    from mio.serve.ui import create_ui_app    # `mio ui`: the UI alone, at /
    from mio.serve.ui import mount_ui         # `mio serve --ui`: the UI at /ui beside the API

Type text, attach images, audio and video (or record from the microphone), and the reply streams in:
text as it is generated, pictures inline, a video as an animated GIF, speech as an audio
player. Settings: mode (std | voice), output modalities, temperature, top-p, max new tokens,
seed. Every turn reaches the model only through `Worker.stream`, so the UI shares the HTTP
server's worker (its queue and batching) when mounted on it. Bad input (an undecodable
upload, a decoding option out of range, a full queue) is shown as a message in the page and
the chat goes on. Needs the `ui` extra (gradio).
"""

from __future__ import annotations

import hmac
import html
import io
import logging
import mimetypes
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from pathlib import Path
from typing import Any

import gradio as gr
import soundfile as sf
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from gradio import processing_utils

from mio.api import MIO, load_image, load_speech, load_video
from mio.generate import MAX_SEED, DecodingConfig, check_integer
from mio.segments import Image, Malformed, Message, Segment, Speech, Text, Video
from mio.serve.app import VIDEO_FPS, worker_app
from mio.serve.worker import ChatJob, QueueFull, Worker, decoding_options

log = logging.getLogger(__name__)

OUTPUT_MODALITIES = ("text", "image", "video", "speech")
MAX_FILE_BYTES = 32 * 2**20
"""Largest upload the UI accepts (the HTTP API's default body limit)."""


def build_ui(worker: Worker, title: str = "MIO") -> gr.Blocks:
    """The chat UI over `worker` (which the caller starts and closes)."""
    with gr.Blocks(title=title, analytics_enabled=False) as ui:
        context = gr.State([])  # the conversation as the model sees it: list[Message]
        with gr.Row():
            with gr.Column(scale=4):
                chat = gr.Chatbot(label=title, height=560, elem_id="mio-chat")
                box = gr.MultimodalTextbox(
                    placeholder="Type a message, attach images, audio or video, or record from the microphone",
                    file_types=["image", "audio", "video"], file_count="multiple", sources=["upload", "microphone"],
                    show_label=False, stop_btn=True, elem_id="mio-box")
            with gr.Column(scale=1, min_width=240):
                mode = gr.Radio(["std", "voice"], value="std", label="Mode", info="voice: answer in speech",
                                elem_id="mio-mode")
                outputs = gr.CheckboxGroup(list(OUTPUT_MODALITIES), label="Output modalities",
                                           info="none ticked: the model chooses", elem_id="mio-outputs")
                custom = gr.Checkbox(False, label="Custom decoding", elem_id="mio-custom",
                                     info="off: the paper's settings per modality; on: the temperature and top-p below")
                temperature = gr.Slider(0, 2, value=1, step=0.05, label="Temperature", info="0: greedy",
                                        elem_id="mio-temperature")
                top_p = gr.Slider(0.05, 1, value=1, step=0.05, label="Top-p", elem_id="mio-top-p")
                max_new_tokens = gr.Number(DecodingConfig.max_new_tokens, precision=0, label="Max new tokens",
                                           elem_id="mio-max-tokens")
                seed = gr.Number(0, precision=0, label="Seed", info="the same seed, settings and chat: the same reply",
                                 elem_id="mio-seed")
                new_chat = gr.Button("New chat", elem_id="mio-new-chat")
        # No gradio concurrency limit: the worker queues (and batches) every turn, and refuses
        # when its queue is full.
        settings = [mode, outputs, custom, temperature, top_p, max_new_tokens, seed]
        turn = box.submit(_responder(worker, ui.GRADIO_CACHE), [box, chat, context, *settings], [box, chat, context],
                          concurrency_limit=None)
        box.stop(None, cancels=[turn])
        new_chat.click(lambda: ([], [], None), None, [chat, context, box], cancels=[turn])
        chat.clear(lambda: [], None, context)
    return ui


def mount_ui(app: FastAPI, path: str = "/ui", api_key: str | None = None) -> FastAPI:
    """Mount the UI on `app` at `path`, using `app.state.worker` (the app starts and closes
    it). With `api_key`, the page asks for it first (as the password; any user name)."""
    auth = None if api_key is None else (lambda _user, password: _same(password, api_key))
    return gr.mount_gradio_app(
        app, build_ui(app.state.worker), path, auth=auth, footer_links=[], run_history=False, ssr_mode=False,
        mcp_server=False, show_error=False, max_file_size=MAX_FILE_BYTES)


def create_ui_app(mio: MIO, queue_size: int = 16) -> FastAPI:
    """An app serving only the UI, at /, with its own worker (started and closed with the app)."""
    return mount_ui(worker_app(Worker(mio, queue_size)), path="/")


def _same(given: str, key: str) -> bool:
    # compare_digest: the time taken does not reveal how much of the key matched.
    return hmac.compare_digest(given.encode(), key.encode())


# ---------------------------------------------------------------- a turn


def _responder(worker: Worker, cache: str) -> Callable[..., AsyncIterator[tuple]]:
    """The handler of a sent message; generated media are written to `cache` (gradio's files)."""

    async def respond(box: dict | None, chat: list[dict], context: list[Message], mode: str, outputs: list[str],
                      custom: bool, temperature: float, top_p: float, max_new_tokens: int | None,
                      seed: int | None) -> AsyncIterator[tuple]:
        """One turn: read the message, then stream the reply into the chat (box, chat, context)."""
        text = ((box or {}).get("text") or "").strip()
        files = list((box or {}).get("files") or [])
        if not text and not files:
            return
        segments, good, problems = [], [], []
        for path in files:
            try:  # decoding an upload takes a while: off the event loop, which serves every page
                segments.append(await run_in_threadpool(_upload, path))
                good.append(path)
            except ValueError as e:
                problems.append(str(e).replace(str(path), Path(path).name))
        if problems:  # keep the text and the good files, so the user can fix the rest and send again
            _error(*problems)
            yield {"text": text, "files": good}, chat, context
            return
        user = Message("user", segments + ([Text(text)] if text else []))
        try:
            job = _job([*context, user], mode, outputs, temperature if custom else None, top_p if custom else None,
                       max_new_tokens, seed)
        except ValueError as e:
            _error(str(e))
            return
        shown = [*chat, {"role": "user", "content": [*({"path": p} for p in files), *([text] if text else [])]}]
        yield {"text": "", "files": []}, shown, context
        reply: list[Segment] = []
        parts: list[Any] = []  # the reply as the chat shows it: strings and files
        try:
            async with aclosing(worker.stream(job)) as stream:  # closed at once when the user stops the turn
                async for seg in stream:
                    reply.append(seg)
                    if isinstance(seg, Text):
                        shown_now = _show_text(seg.text, parts)
                    else:  # encoding a picture or a waveform takes a while: off the event loop
                        shown_now = await run_in_threadpool(_show_media, seg, parts, cache)
                    if shown_now:
                        said = Message("assistant", _merged(reply))
                        yield gr.skip(), [*shown, {"role": "assistant", "content": list(parts)}], [*context, user, said]
        except QueueFull as e:
            _error(f"the model is busy: {e}")
        except ValueError as e:  # the model's checks of the inputs and the decoding options
            _error(str(e))
        except Exception as e:  # noqa: BLE001 -- shown to the user; the UI keeps serving
            log.exception("generation failed")
            _error(f"internal error: {type(e).__name__}: {e}")
        else:
            if not parts:
                said = Message("assistant", _merged(reply))
                yield gr.skip(), [*shown, {"role": "assistant", "content": "(an empty reply)"}], [*context, user, said]
            return
        # The turn failed: put the message back in the box to send again, and the chat as it was.
        yield {"text": text, "files": files}, chat, context

    return respond


def _error(*messages: str) -> None:
    """Show messages in the page (escaped: they may quote file names and user text)."""
    for message in messages:
        gr.Warning(html.escape(message), duration=20)


def _upload(path: str) -> Segment:
    """An uploaded file as a segment, by its type (ValueError when it is none of them or unreadable)."""
    kind = (mimetypes.guess_type(path)[0] or "").split("/")[0]
    if kind == "image":
        return load_image(path)
    if kind == "audio":
        return load_speech(path)
    if kind == "video":
        return load_video(path)
    raise ValueError(f"{Path(path).name}: attach images, audio or video files (got {kind or 'an unknown type'})")


def _job(messages: list[Message], mode: str, outputs: list[str], temperature: float | None, top_p: float | None,
         max_new_tokens: int | None, seed: int | None) -> ChatJob:
    """The chat to run, decoding options as the HTTP API reads them (ValueError when out of range)."""
    if mode not in ("std", "voice"):
        raise ValueError(f"mode must be std or voice, got {mode!r}")
    if any(m not in OUTPUT_MODALITIES for m in outputs or ()):
        raise ValueError(f"output modalities are a subset of {', '.join(OUTPUT_MODALITIES)}, got {outputs}")
    decoding, overrides = decoding_options(None if temperature is None else float(temperature),
                                           None if top_p is None else float(top_p),
                                           None if max_new_tokens is None else int(max_new_tokens))
    decoding.override(**overrides).validate()
    if seed is not None:
        check_integer("seed", int(seed), 0, MAX_SEED)
    return ChatJob(messages, mode, list(outputs or ()) or None, decoding, None if seed is None else int(seed), overrides)


def _merged(reply: list[Segment]) -> list[Segment]:
    """A reply as history: streamed text pieces joined, malformed blocks left out."""
    out: list[Segment] = []
    for seg in reply:
        if isinstance(seg, Text) and out and isinstance(out[-1], Text):
            out[-1] = Text(out[-1].text + seg.text)
        elif not isinstance(seg, Malformed):
            out.append(Text(seg.text) if isinstance(seg, Text) else seg)
    return out


def _show_text(text: str, parts: list[Any]) -> bool:
    """Add text to the shown reply, joined to the text before it; False when there is none."""
    if not text:
        return False
    if parts and isinstance(parts[-1], str):
        parts[-1] += text
    else:
        parts.append(text)
    return True


def _show_media(seg: Segment, parts: list[Any], cache: str) -> bool:
    """Add a media segment to the shown reply as a file written once to gradio's cache; False
    when it has nothing to show."""
    data = _media(seg)
    if data is None:
        log.warning("a generated %s cannot be shown (malformed, or codes without a decoder)",
                    seg.modality if isinstance(seg, Malformed) else type(seg).__name__.lower())
        return False
    payload, name = data
    parts.append({"path": processing_utils.save_bytes_to_cache(payload, name, cache)})
    return True


def _media(seg: Segment) -> tuple[bytes, str] | None:
    """A media segment as file bytes and a file name: PNG, an animated GIF for a video, WAV."""
    buf = io.BytesIO()
    if isinstance(seg, Image) and seg.image is not None:
        seg.image.save(buf, format="PNG")
        return buf.getvalue(), "image.png"
    if isinstance(seg, Video) and seg.frames and all(f.image is not None for f in seg.frames):
        frames = [f.image.convert("RGB") for f in seg.frames]
        frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=round(1000 / VIDEO_FPS),
                       loop=0)
        return buf.getvalue(), "video.gif"
    if isinstance(seg, Speech) and seg.wave is not None:
        sf.write(buf, seg.wave.detach().cpu().float().flatten().numpy(), seg.sample_rate, format="WAV",
                 subtype="PCM_16")
        return buf.getvalue(), "speech.wav"
    return None
