"""`mio bench serve`: throughput and latency of the chat-completions server under load.

The real server (`mio.serve.create_app`, uvicorn on a free 127.0.0.1 port, in a background
thread of this process) answers the same `requests` text chats twice: first one at a time,
then from `concurrency` clients at once (asyncio + httpx, each client sending its next
request when its last reply ends). Every request is streamed (`stream: true`, with
`stream_options.include_usage` so the last chunk carries OpenAI's `usage`), greedy
(`temperature` 0, a fixed seed), text out (`modalities: ["text"]`), `max_tokens` new tokens,
with a fixed prompt (random words, the same set in both modes). One untimed request first
warms the model and the server.

Per mode (`sequential`, `concurrent`):

- `completion_tokens_per_s`: the sum of `usage.completion_tokens` over the mode's wall time
  (first request sent to last reply ended);
- `requests_per_s`: requests over that wall time;
- `latency_s` {p50, p90, p99}: request sent to `[DONE]` received;
- `ttft_s` {p50, p90}: request sent to the first chunk with text (the whole latency for a
  reply without text).

`speedup` is concurrent over sequential tokens per second: what serving clients together
(continuous batching) gains over serving them in turn. The clients run in a process of
their own, as real clients would (in the server's process they would take turns with it for
Python's interpreter lock), but on the same cores.

Without `--model` the model is random (built in memory as `mio bench generate` builds it, at
its preset's size) and has no media tokenizers; a random model rarely writes its stop token,
so replies run to `max_tokens`. On a CPU shared with other jobs, pass `--threads 1` (see
`mio.eval.bench_generate`).

    mio bench serve --preset small --threads 1 --json bench_serve.json
"""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing
import random
import time
from dataclasses import dataclass

import httpx
import numpy as np
import torch

from mio.api import MIO
from mio.eval.bench_generate import WORDS
from mio.model import count_parameters

log = logging.getLogger(__name__)

MODEL_NAME = "mio-bench"
REQUEST_TIMEOUT_S = 600.0


@dataclass
class ServeBenchConfig:
    """The workload: how many requests, from how many concurrent clients, how many new
    tokens each, and the seed of the prompts and of decoding."""

    requests: int = 32
    concurrency: int = 16
    max_tokens: int = 64
    seed: int = 0

    def validate(self) -> None:
        """Raise ValueError for a workload that cannot run."""
        for name in ("requests", "concurrency", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")


@dataclass
class RequestResult:
    """One streamed reply as the client saw it."""

    latency_s: float
    ttft_s: float
    completion_tokens: int


def prompts(n: int, seed: int = 0) -> list[str]:
    """`n` fixed prompts of 8-24 random words."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(8, 24))) for _ in range(n)]


def request_body(prompt: str, config: ServeBenchConfig) -> dict:
    """A streamed, greedy, text-only chat request that reports its usage."""
    return {"model": MODEL_NAME, "messages": [{"role": "user", "content": prompt}], "max_tokens": config.max_tokens,
            "temperature": 0, "seed": config.seed, "modalities": ["text"], "stream": True,
            "stream_options": {"include_usage": True}}


async def send(client: httpx.AsyncClient, body: dict) -> RequestResult:
    """Send one streamed chat request and time it; raises RuntimeError for any failure."""
    start = time.perf_counter()
    ttft = tokens = None
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"the server answered {response.status_code}: {response.text}")
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                break
            chunk = json.loads(line.removeprefix("data: "))
            if "error" in chunk:
                raise RuntimeError(f"the reply failed: {chunk['error']}")
            if ttft is None and any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                ttft = time.perf_counter() - start
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    latency = time.perf_counter() - start
    if tokens is None:
        raise RuntimeError("the streamed reply carried no usage (stream_options.include_usage)")
    return RequestResult(latency, latency if ttft is None else ttft, tokens)


async def run_clients(base_url: str, bodies: list[dict], concurrency: int) -> tuple[list[RequestResult], float]:
    """Send `bodies` from `concurrency` clients, each sending the next unsent body when its
    reply ends; the results in the order of `bodies`, and the wall time in seconds."""
    results: list[RequestResult | None] = [None] * len(bodies)
    pending = iter(range(len(bodies)))

    async def client_loop(client: httpx.AsyncClient) -> None:
        for i in pending:  # one shared iterator: each index is taken by exactly one client
            results[i] = await send(client, bodies[i])

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return results, wall


def summarize(results: list[RequestResult], wall_s: float) -> dict:
    """One mode's throughputs and latency percentiles."""
    latency = np.array([r.latency_s for r in results])
    ttft = np.array([r.ttft_s for r in results])
    tokens = sum(r.completion_tokens for r in results)
    return {
        "completion_tokens_per_s": tokens / wall_s,
        "requests_per_s": len(results) / wall_s,
        "latency_s": {f"p{q}": float(np.percentile(latency, q)) for q in (50, 90, 99)},
        "ttft_s": {f"p{q}": float(np.percentile(ttft, q)) for q in (50, 90)},
        "completion_tokens": tokens,
        "requests": len(results),
        "wall_s": wall_s,
    }


async def _measure(base_url: str, config: ServeBenchConfig) -> dict:
    bodies = [request_body(p, config) for p in prompts(config.requests, config.seed)]
    await run_clients(base_url, bodies[:1], 1)  # warmup
    out = {}
    for mode, clients in (("sequential", 1), ("concurrent", config.concurrency)):
        log.info("%s: %d requests from %d client(s), %d new tokens each", mode, len(bodies), clients, config.max_tokens)
        results, wall = await run_clients(base_url, bodies, clients)
        out[mode] = summarize(results, wall)
        log.info("%s: %.1f tokens/s, %.2f requests/s, latency p50 %.3f s", mode, out[mode]["completion_tokens_per_s"],
                 out[mode]["requests_per_s"], out[mode]["latency_s"]["p50"])
    return out


def _clients(base_url: str, config: ServeBenchConfig, connection) -> None:
    """The client process: both modes' measurements (or the error) back through `connection`."""
    try:
        connection.send(("ok", asyncio.run(_measure(base_url, config))))
    except Exception as e:  # noqa: BLE001 -- reported by the parent, which raises it
        connection.send(("error", f"{type(e).__name__}: {e}"))


def measure(mio: MIO, config: ServeBenchConfig, model_description: str) -> dict:
    """Serve `mio` and measure it under `config`'s workload, as the command's JSON object."""
    from mio.serve import ServeConfig, create_app, running_server

    config.validate()
    app = create_app(mio, ServeConfig(model_name=MODEL_NAME, queue_size=config.concurrency))
    with running_server(app) as base_url:
        log.info("serving on %s", base_url)
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no copy of the model or its threads
        receive, send_end = context.Pipe(duplex=False)
        process = context.Process(target=_clients, args=(base_url, config, send_end), name="bench-clients")
        process.start()
        status, result = receive.recv()
        process.join()
    if status != "ok":
        raise RuntimeError(f"the benchmark's clients failed: {result}")
    result["speedup"] = result["concurrent"]["completion_tokens_per_s"] / result["sequential"]["completion_tokens_per_s"]
    result |= {"concurrency": config.concurrency, "requests": config.requests, "max_tokens": config.max_tokens,
               "model": model_description, "device": str(mio.device), "threads": torch.get_num_threads()}
    return result


def describe(mio: MIO, source: str) -> str:
    """The model in one line: where it came from, its size and precision."""
    config = mio.model.config
    dtype = str(next(mio.model.parameters()).dtype).removeprefix("torch.")
    return (f"{source}: Llama, {count_parameters(mio.model) / 1e6:.1f}M params, hidden {config.hidden_size}, "
            f"{config.num_hidden_layers} layers, vocab {config.vocab_size}, {dtype}")
