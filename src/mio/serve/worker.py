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

MAX_BATCH = 16
"""Cache slots of the running batch (a guided request takes two). Each holds a whole
context's keys and values (the released 7B in bf16: 0.27 GB per slot at 4096 positions)."""


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


def decoding_options(temperature: float | None, top_p: float | None,
                     max_new_tokens: int | None) -> tuple[DecodingConfig, dict]:
    """OpenAI's sampling fields as a DecodingConfig and overrides (for `ChatJob`): temperature
    0 is greedy; a temperature or top_p samples every modality with it; neither keeps the
    paper's per-modality settings (Table 11)."""
    overrides: dict = {} if max_new_tokens is None else {"max_new_tokens": max_new_tokens}
    if temperature == 0:
        return DecodingConfig.greedy(), overrides
    if temperature is not None or top_p is not None:
        overrides |= {"do_sample": True, "num_beams": 1}
    if temperature is not None:
        overrides["temperature"] = temperature
    if top_p is not None:
        overrides["top_p"] = top_p
    return DecodingConfig(), overrides


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
    out: asyncio.Queue
    cancelled: threading.Event
    parser: StreamParser
    cut: StopText
    outbox: list
    """Messages for the client, handed over once per step (`Worker._deliver`)."""
    row: Row | None = None
    tokens: int = 0
    stopped: bool = False
    """A stop string ended the reply; what the model wrote after it is dropped."""

    def send(self, kind: str, value=None) -> None:
        self.outbox.append((self.out, (kind, value)))


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
        self._outbox: dict[asyncio.AbstractEventLoop, list] = {}

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
        with self._lock:
            outbox = self._outbox.setdefault(loop, [])
        entry = _Request(job, request, asyncio.Queue(), threading.Event(),
                         StreamParser(self.mio.vocab, video="video" in request.output_modalities), StopText(job.stop),
                         outbox)
        self._jobs.put(entry)
        try:
            held = None
            while True:
                kind, value = held or await entry.out.get()
                held = None
                if kind == "end":
                    return
                if kind == "error":
                    raise value
                if kind == "media":
                    yield await asyncio.wrap_future(value)
                    continue
                # Text pieces that piled up while the client was busy go out as one: under
                # load a reply is sent in fewer, larger pieces, not one event per token.
                while held is None and not entry.out.empty():
                    more = entry.out.get_nowait()
                    if more[0] == "item" and isinstance(more[1], Text):
                        value = Text(value.text + more[1].text)
                    else:
                        held = more
                yield value
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
            self._deliver()
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
            self._admit(engine, pending, running)
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

    def _deliver(self) -> None:
        """Hand each event loop its clients' new messages in one call: one wake-up per step,
        not one per token."""
        with self._lock:
            outboxes = list(self._outbox.items())
        for loop, messages in outboxes:
            if loop.is_closed():  # the server is shutting down (or a test's loop ended): nobody is listening
                with self._lock:
                    self._outbox.pop(loop, None)
            elif messages:
                batch = list(messages)
                messages.clear()
                loop.call_soon_threadsafe(_put_all, batch)

    def _admit(self, engine: Engine, pending: collections.deque[_Request], running: dict[Row, _Request]) -> None:
        """Move waiting requests into the running batch, in arrival order, while their slots
        are free; their prompts are prefilled together."""
        admitted, free = [], len(engine.free_slots)
        while pending and (pending[0].cancelled.is_set() or engine.slots_needed(pending[0].request) <= free):
            entry = pending.popleft()
            if entry.cancelled.is_set():
                continue
            try:
                engine.check(entry.request)
            except Exception as e:  # noqa: BLE001 -- handed to the request, which answers it (400)
                entry.send("error", e)
                continue
            admitted.append(entry)
            free -= engine.slots_needed(entry.request)
        if not admitted:
            return
        try:
            rows = engine.add([entry.request for entry in admitted])
        except Exception as e:  # noqa: BLE001 -- a failed prefill fails its requests, not the server
            log.exception("prefill failed")
            for entry in admitted:
                entry.send("error", e)
            return
        for entry, (row,) in zip(admitted, rows):
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


def _put_all(messages: list) -> None:
    for out, message in messages:
        out.put_nowait(message)
