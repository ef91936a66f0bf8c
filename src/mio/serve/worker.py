"""The generation worker: one thread that owns the model and decodes every request in one
running batch (continuous batching).

A request's chat is tokenized on the caller's side (a thread of the event loop's pool), then
queued. The worker thread loops: it admits waiting requests while the engine has free cache
slots (`mio.generate.Engine`: each joins the running batch at the next step), runs one step
for every running request, and hands each request its new reply pieces. A request leaves the
batch when it ends (a stop token, its token budget, a stop string) or when its client goes
away, which frees its slot at once. When `queue_size` requests are already waiting a new one
is refused (`QueueFull`, answered 429) rather than piling up.

Generated pictures and speech are de-tokenized on a second thread, so a slow decoder (the
released model's diffusion decoder takes seconds) does not stall the batch; each request
still gets its pieces in order. The app sees only `Worker.stream(job)`, an async iterator of
reply segments, and `job.usage` / `job.finish_reason` once it ends.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from mio.api import MIO
from mio.generate import DecodingConfig, Engine, GenerationRequest, Row
from mio.segments import Message, Segment, Text
from mio.vocab import StreamParser

log = logging.getLogger(__name__)

MAX_BATCH = 8
"""Cache slots of the running batch (a guided request takes two): past ~8 rows a CPU step
costs about as much per row as a lone one, and each slot holds a context's keys and values."""


class QueueFull(RuntimeError):
    """Too many requests are waiting for the model."""


@dataclass
class Usage:
    """Token counts of a finished reply, as OpenAI reports them."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class ChatJob:
    """One chat to answer: the arguments of `MIO.stream_chat`, plus stop strings. When the
    reply has ended, `finish_reason` ("stop" or "length") and `usage` say how."""

    messages: list[Message]
    mode: str = "std"
    output_modalities: Sequence[str] | None = None
    decoding: DecodingConfig | None = None
    seed: int | None = None
    overrides: dict = field(default_factory=dict)
    stop: Sequence[str] = ()
    finish_reason: str | None = None
    usage: Usage | None = None


class StopText:
    """Cuts streamed text at the first stop string, holding back a tail that may be the
    start of one (so no piece of a stop string is ever sent)."""

    def __init__(self, stops: Sequence[str]):
        self.stops, self.buffer = list(stops), ""

    def feed(self, text: str) -> tuple[str, bool]:
        """The text that is safe to send, and whether a stop string was reached."""
        self.buffer += text
        hits = [i for i in (self.buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.buffer = self.buffer[:min(hits)], ""
            return out, True
        keep = max((k for s in self.stops for k in range(1, len(s)) if self.buffer.endswith(s[:k])), default=0)
        out, self.buffer = self.buffer[:len(self.buffer) - keep], self.buffer[len(self.buffer) - keep:]
        return out, False

    def flush(self) -> str:
        """The held-back text (the reply went on with media, or ended)."""
        out, self.buffer = self.buffer, ""
        return out


def stop_at(segments: Iterable[Segment], stops: Sequence[str]) -> Iterator[Segment]:
    """`segments` up to the first stop string inside their text (the reply ends there)."""
    cut = StopText(stops)
    for seg in segments:
        if not isinstance(seg, Text):
            if held := cut.flush():
                yield Text(held)
            yield seg
            continue
        text, stopped = cut.feed(seg.text)
        if text:
            yield Text(text)
        if stopped:
            return
    if held := cut.flush():
        yield Text(held)


@dataclass(eq=False)
class _Request:
    """A queued or running request: its job, the engine request, and the way back to its client."""

    job: ChatJob
    request: GenerationRequest
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue
    cancelled: threading.Event
    parser: StreamParser
    cut: StopText
    row: Row | None = None
    tokens: int = 0
    stopped: bool = False
    """A stop string ended the reply; what the model wrote after it is dropped."""

    def send(self, kind: str, value=None) -> None:
        if self.loop.is_closed():  # the server is shutting down; nobody is listening
            self.cancelled.set()
        else:
            self.loop.call_soon_threadsafe(self.out.put_nowait, (kind, value))


class Worker:
    """Serves `ChatJob`s in one continuously batched engine, with at most `queue_size` waiting."""

    def __init__(self, mio: MIO, queue_size: int = 16, max_batch: int = MAX_BATCH):
        if max_batch < 2:
            raise ValueError(f"max_batch must be >= 2 (a guided request takes two slots), got {max_batch}")
        self.mio, self.queue_size, self.max_batch = mio, queue_size, max_batch
        self._jobs: queue.Queue = queue.Queue()
        self._waiting = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="mio-generation", daemon=True)
        self._media = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mio-detokenize")
        self.running = 0
        """Requests in the running batch (for tests and logs)."""

    def start(self) -> None:
        """Start the generation thread."""
        self._thread.start()

    def close(self) -> None:
        """Stop after the current step (running and waiting requests are dropped with the event loop)."""
        self._jobs.put(None)
        self._thread.join(timeout=30)
        self._media.shutdown(wait=False, cancel_futures=True)

    async def stream(self, job: ChatJob) -> AsyncIterator[Segment]:
        """The reply's segments as they are generated; raises `QueueFull` at once when the
        queue is full, and whatever the model raised (ValueError for bad inputs)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._waiting >= self.queue_size:
                raise QueueFull(f"{self._waiting} requests are already waiting; try again later")
            self._waiting += 1
        try:
            request = await loop.run_in_executor(None, self._request, job)
        except BaseException:
            with self._lock:
                self._waiting -= 1
            raise
        entry = _Request(job, request, loop, asyncio.Queue(), threading.Event(),
                         StreamParser(self.mio.vocab, video="video" in request.output_modalities), StopText(job.stop))
        self._jobs.put(entry)
        try:
            while True:
                kind, value = await entry.out.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise value
                yield await asyncio.wrap_future(value) if kind == "media" else value
        finally:
            entry.cancelled.set()  # the request is gone: its slot is freed at the next step

    def _request(self, job: ChatJob) -> GenerationRequest:
        return self.mio.chat_request(job.messages, job.mode, job.output_modalities, job.decoding, job.seed,
                                     **job.overrides)

    # ---- the generation thread

    def _loop(self) -> None:
        engine = Engine(self.mio.model, self.mio.vocab, self.max_batch, self.mio.context_length)
        running: dict[Row, _Request] = {}
        pending: collections.deque[_Request] = collections.deque()
        while True:
            # Block for work only when nothing is running; otherwise take what has arrived.
            try:
                while True:
                    entry = self._jobs.get(block=not running and not pending)
                    if entry is None:
                        return
                    with self._lock:
                        self._waiting -= 1
                    pending.append(entry)
            except queue.Empty:
                pass
            while pending and (pending[0].cancelled.is_set()
                               or engine.slots_needed(pending[0].request) <= len(engine.free_slots)):
                entry = pending.popleft()
                if not entry.cancelled.is_set():
                    self._admit(engine, entry, running)
            for row, entry in list(running.items()):
                if entry.cancelled.is_set():
                    log.info("request cancelled; its slot is freed")
                    engine.remove(row)
                    del running[row]
            self.running = len(running)
            if not running:
                continue
            try:
                steps = engine.step()
            except Exception as e:  # noqa: BLE001 -- a failed step fails its requests, not the server
                log.exception("generation step failed")
                for row, entry in running.items():
                    engine.remove(row)
                    entry.send("error", e)
                running.clear()
                continue
            for row, token in steps:
                entry = running[row]
                if token is not None and not entry.stopped:
                    entry.tokens += 1
                    if self._emit(entry, entry.parser.feed(token)):  # a stop string: the reply ends here
                        engine.remove(row, "stop")
                if row.finish_reason is not None:
                    self._finish(entry)
                    del running[row]

    def _admit(self, engine: Engine, entry: _Request, running: dict[Row, _Request]) -> None:
        try:
            (row,) = engine.add_request(entry.request)
        except Exception as e:  # noqa: BLE001 -- handed to the request, which answers it (400 or 500)
            entry.send("error", e)
            return
        entry.row = row
        running[row] = entry

    def _emit(self, entry: _Request, segments: list[Segment]) -> bool:
        """Send `segments` (text through the stop strings, media to be de-tokenized); True
        when a stop string ended the reply."""
        for seg in segments:
            if not isinstance(seg, Text):
                if held := entry.cut.flush():
                    entry.send("item", Text(held))
                entry.send("media", self._media.submit(self._detokenize, seg))
                continue
            text, stopped = entry.cut.feed(seg.text)
            if text:
                entry.send("item", Text(text))
            if stopped:
                entry.stopped = True
                return True
        return False

    def _detokenize(self, seg: Segment) -> Segment:
        return self.mio.detokenize([seg])[0]

    def _finish(self, entry: _Request) -> None:
        if not entry.stopped and not self._emit(entry, entry.parser.close()):
            if held := entry.cut.flush():
                entry.send("item", Text(held))
        row = entry.row
        entry.job.finish_reason = "length" if row.finish_reason == "length" else "stop"
        entry.job.usage = Usage(row.prompt_tokens, entry.tokens)
        entry.send("end")

