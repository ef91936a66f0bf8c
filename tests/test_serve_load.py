"""`mio serve` under load: a live server on a tiny model with many clients at once, bad
requests among good ones, a client that hangs up mid-stream, and `mio bench serve`."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from dataclasses import dataclass

import pytest
import soundfile as sf
import torch
from PIL import Image as PILImage

from conftest import make_run_dir
from mio.api import MIO
from mio.cli.main import main

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
from mio.serve import ServeConfig, create_app, running_server  # noqa: E402 -- needs the serve extra, checked above

KEY = "load-key"
MODEL = "tiny"
MAX_BODY = 2**18
CONTEXT = 4096
LONG_REPLY = 3000
"""Tokens the abandoned stream asks for: seconds of decoding if the server kept going."""


@dataclass
class Served:
    """A live server, and how many forward passes its model has run."""

    url: str = ""
    forward_passes: int = 0


@pytest.fixture(scope="module")
def served(tmp_path_factory, text_tokenizer):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the one_thread fixture does, for the whole module's server
    run = make_run_dir(tmp_path_factory.mktemp("run"), text_tokenizer, positions=CONTEXT, context_length=CONTEXT)
    mio = MIO.from_pretrained(run, device="cpu")
    served = Served()
    # A head that never writes a stop token unless it is the only one allowed (a bias of
    # -1e4 on those rows): replies run to max_tokens, so a long request stays long.
    head = mio.model.get_output_embeddings()
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    biased.weight = head.weight
    with torch.no_grad():
        biased.bias.zero_()
        biased.bias[[mio.vocab.im_end, mio.vocab.eos_id]] = -1e4
    mio.model.set_output_embeddings(biased)

    def count(*_):  # every forward pass, whatever runs it, embeds its tokens: this counts them
        served.forward_passes += 1

    mio.model.get_input_embeddings().register_forward_hook(count)
    app = create_app(mio, ServeConfig(model_name=MODEL, api_key=KEY, max_body_bytes=MAX_BODY, queue_size=64))
    with running_server(app) as url:
        served.url = url
        yield served
    torch.set_num_threads(threads)


def png_data_uri(color: str = "red") -> str:
    buf = io.BytesIO()
    PILImage.new("RGB", (40, 30), color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def chat(content, **fields) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "seed": 0, "max_tokens": 8} | fields


def good_request(i: int) -> dict:
    """The i-th of a mix: text, image in, image out, speech out; every other one streamed."""
    kind = ["text"] * 6 + ["image in"] * 2 + ["image out", "audio out"]
    body = {"text": lambda: chat("what colour is the shape?", modalities=["text"]),
            "image in": lambda: chat([{"type": "text", "text": "what is this?"},
                                      {"type": "image_url", "image_url": {"url": png_data_uri()}}], modalities=["text"]),
            "image out": lambda: chat("Please generate an image of a small yellow star", max_tokens=12,
                                      output_modalities=["image"]),
            "audio out": lambda: chat("say hello", max_tokens=16, modalities=["text", "audio"],
                                      audio={"voice": "alloy", "format": "wav"})}[kind[i % len(kind)]]()
    if i % 2:
        body |= {"stream": True, "stream_options": {"include_usage": i % 4 == 1}}
    return body


def headers(key: str | None = KEY, content_type: str = "application/json") -> dict:
    return {"Content-Type": content_type} | ({"Authorization": f"Bearer {key}"} if key else {})


async def post(client: httpx.AsyncClient, body: dict | str | bytes, **kw) -> tuple[int, dict]:
    """Send a request; the status and the reply as one chat.completion-like dict (a stream's
    chunks merged: its text joined, its images and audio collected, its usage)."""
    content = body if isinstance(body, (str, bytes)) else json.dumps(body)
    async with client.stream("POST", "/v1/chat/completions", content=content, headers=headers(**kw)) as response:
        if not response.headers["content-type"].startswith("text/event-stream"):
            await response.aread()
            return response.status_code, response.json()
        lines = [line async for line in response.aiter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert not any("error" in c for c in chunks), chunks
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == MODEL for c in chunks)
    deltas = [c["choices"][0] for c in chunks if c["choices"]]
    assert deltas[0]["delta"]["role"] == "assistant" and deltas[-1]["finish_reason"] in ("stop", "length")
    message = {"role": "assistant", "content": "".join(d["delta"].get("content") or "" for d in deltas),
               "images": [i for d in deltas for i in d["delta"].get("images", [])],
               "audio": next((d["delta"]["audio"] for d in deltas if "audio" in d["delta"]), None)}
    merged = {"object": "chat.completion", "choices": [{"message": message, "finish_reason": deltas[-1]["finish_reason"]}]}
    if "usage" in chunks[-1]:
        assert chunks[-1]["choices"] == []  # OpenAI's usage chunk: last, with no choices
        merged["usage"] = chunks[-1]["usage"]
    return response.status_code, merged


def check_reply(body: dict, reply: dict) -> None:
    """`reply` is a well-formed answer to `body`, with the output `body` asked for."""
    assert reply["object"] == "chat.completion"
    choice = reply["choices"][0]
    assert choice["finish_reason"] in ("stop", "length")
    message = choice["message"]
    if "output_modalities" in body:
        url = message["images"][0]["image_url"]["url"]
        assert PILImage.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).format == "PNG"
    elif "audio" in body:
        wave, rate = sf.read(io.BytesIO(base64.b64decode(message["audio"]["data"])))
        assert rate > 0 and len(wave) > 0
    else:
        assert isinstance(message["content"], str) and message["content"]
        assert choice["finish_reason"] == "length"  # the head never stops: max_tokens ends every text reply
    if body.get("stream") and not body["stream_options"]["include_usage"]:
        assert "usage" not in reply
    else:
        usage = reply["usage"]
        assert usage["completion_tokens"] > 0 and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def has_text(line: str) -> bool:
    """Whether a server-sent event line is a chunk with text."""
    chunk = json.loads(line.removeprefix("data: ")) if line.startswith("data: {") else {}
    return any(c["delta"].get("content") for c in chunk.get("choices", []))


def check_error(status: int, reply: dict, expected: int) -> None:
    assert status == expected, reply
    assert set(reply["error"]) == {"message", "type", "param", "code"} and reply["error"]["message"]


def client(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=100))


def test_fifty_concurrent_mixed_requests_all_complete(served):
    bodies = [good_request(i) for i in range(50)]

    async def all_at_once():
        async with client(served.url) as c:
            return await asyncio.gather(*(post(c, b) for b in bodies))

    for body, (status, reply) in zip(bodies, asyncio.run(all_at_once())):
        assert status == 200, reply
        check_reply(body, reply)


BAD = {
    "malformed JSON": ('{"messages": [', {}, 400),
    "wrong content type": (json.dumps(chat("hi")), {"content_type": "text/plain"}, 400),
    "wrong API key": (chat("hi"), {"key": "not-the-key"}, 401),
    "unknown field": (chat("hi", frobnicate=1), {}, 400),
    "undecodable image": (chat([{"type": "image_url", "image_url": {"url": "data:image/png;base64,anVuaw=="}}]), {}, 400),
    "bad temperature": (chat("hi", temperature=-1), {}, 400),
    "oversize body": (chat("x" * (MAX_BODY + 1)), {}, 413),
}


def test_bad_requests_among_good_ones_lose_no_good_reply(served):
    mix = []
    for round_ in range(3):  # each bad request between two good ones, all sent at once
        for k, (name, (body, kw, status)) in enumerate(BAD.items()):
            mix += [("good", good_request(2 * (len(BAD) * round_ + k)), {}, 200), (name, body, kw, status)]

    async def all_at_once():
        async with client(served.url) as c:
            return await asyncio.gather(*(post(c, body, **kw) for _, body, kw, _ in mix))

    for (name, body, _, expected), (status, reply) in zip(mix, asyncio.run(all_at_once())):
        if name == "good":
            assert status == 200, reply
            check_reply(body, reply)
        else:
            check_error(status, reply, expected)
    assert httpx.get(f"{served.url}/health", timeout=10).json()["status"] == "ok"


def test_a_client_hanging_up_mid_stream_frees_the_model(served):
    body = json.dumps(chat("tell me a long story", max_tokens=LONG_REPLY, modalities=["text"], stream=True))
    start_passes = served.forward_passes
    with httpx.Client(base_url=served.url, timeout=60) as c:
        with c.stream("POST", "/v1/chat/completions", content=body, headers=headers()) as response:
            assert response.status_code == 200
            next(line for line in response.iter_lines() if has_text(line))
        # Leaving the block closed the connection after the first text.

    async def next_requests():
        async with client(served.url) as c:
            return await asyncio.gather(*(post(c, good_request(i)) for i in range(4)))

    for i, (status, reply) in enumerate(asyncio.run(next_requests())):
        assert status == 200, reply
        check_reply(good_request(i), reply)
    # The model goes idle: no forward pass for a while, long before the abandoned reply's end.
    deadline = time.monotonic() + 30
    while True:
        passes = served.forward_passes
        time.sleep(0.5)
        if served.forward_passes == passes or time.monotonic() > deadline:
            break
    assert served.forward_passes == passes, "the model kept running for the abandoned stream"
    assert passes - start_passes < LONG_REPLY / 2, f"{passes - start_passes} passes for a reply cut after its first text"


def test_bench_serve_writes_its_json(tmp_path, one_thread):
    path = tmp_path / "out.json"
    assert main(["bench", "serve", "--preset", "tiny", "--requests", "8", "--concurrency", "4", "--threads", "1",
                 "--json", str(path)]) == 0
    result = json.loads(path.read_text())
    assert {"sequential", "concurrent", "speedup", "model", "device", "threads"} <= set(result)
    assert result["threads"] == 1 and result["speedup"] > 0 and "Llama" in result["model"] and result["device"] == "cpu"
    assert (result["requests"], result["concurrency"], result["max_tokens"]) == (8, 4, 6)  # 6: the tiny preset's
    for mode in ("sequential", "concurrent"):
        m = result[mode]
        assert m["completion_tokens_per_s"] > 0 and m["requests_per_s"] > 0 and m["requests"] == 8
        assert 0 < m["latency_s"]["p50"] <= m["latency_s"]["p90"] <= m["latency_s"]["p99"]
        assert 0 < m["ttft_s"]["p50"] <= m["ttft_s"]["p90"] <= m["latency_s"]["p99"]
