"""The generation worker: one thread that owns the model and serves chats one at a time.

Requests wait in a bounded queue; when `queue_size` are already waiting a new one is refused
(`QueueFull`, answered 429) rather than piling up. The app sees only `Worker.stream(job)`,
an async iterator of reply segments, so a scheduler that batches requests (continuous
batching) can replace this class without touching the HTTP layer.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from mio.api import MIO
from mio.generate import DecodingConfig
from mio.segments import Message, Segment, Text

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """Too many requests are waiting for the model."""


@dataclass
class ChatJob:
    """One chat to answer: the arguments of `MIO.stream_chat`, plus stop strings."""

    messages: list[Message]
    mode: str = "std"
    output_modalities: Sequence[str] | None = None
    decoding: DecodingConfig | None = None
    seed: int | None = None
    overrides: dict = field(default_factory=dict)
    stop: Sequence[str] = ()


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


class Worker:
    """Serves `ChatJob`s on one thread, in arrival order, with at most `queue_size` waiting."""

    def __init__(self, mio: MIO, queue_size: int = 16):
        self.mio, self.queue_size = mio, queue_size
        self._jobs: queue.Queue = queue.Queue()
        self._waiting = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="mio-generation", daemon=True)

    def start(self) -> None:
        """Start the generation thread."""
        self._thread.start()

    def close(self) -> None:
        """Stop after the current job (waiting jobs are dropped with the event loop)."""
        self._jobs.put(None)
        self._thread.join(timeout=30)

    async def stream(self, job: ChatJob) -> AsyncIterator[Segment]:
        """The reply's segments as they are generated; raises `QueueFull` at once when the
        queue is full, and whatever the model raised (ValueError for bad inputs)."""
        loop = asyncio.get_running_loop()
        out: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()
        with self._lock:
            if self._waiting >= self.queue_size:
                raise QueueFull(f"{self._waiting} requests are already waiting; try again later")
            self._waiting += 1
        self._jobs.put((job, loop, out, cancelled))
        try:
            while True:
                kind, value = await out.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise value
                yield value
        finally:
            cancelled.set()  # the request is gone: stop generating for it

    def _loop(self) -> None:
        while (entry := self._jobs.get()) is not None:
            job, loop, out, cancelled = entry
            with self._lock:
                self._waiting -= 1
            if not cancelled.is_set():
                self._serve(job, loop, out, cancelled)

    def _serve(self, job: ChatJob, loop: asyncio.AbstractEventLoop, out: asyncio.Queue,
               cancelled: threading.Event) -> None:
        def send(kind: str, value=None) -> None:
            if loop.is_closed():  # the server is shutting down; nobody is listening
                cancelled.set()
            else:
                loop.call_soon_threadsafe(out.put_nowait, (kind, value))

        pieces = self.mio.stream_chat(job.messages, job.mode, job.output_modalities, job.decoding, job.seed,
                                      **job.overrides)
        try:
            for seg in stop_at(pieces, job.stop):
                if cancelled.is_set():
                    log.info("request cancelled; generation stopped")
                    return
                send("item", seg)
            send("end")
        except Exception as e:  # noqa: BLE001 -- handed to the request, which answers it (400 or 500)
            send("error", e)
        finally:
            pieces.close()
