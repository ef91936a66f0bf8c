"""`mio serve`: a real uvicorn server on a tiny model, driven by the real `openai` client."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import httpx
import pytest
import soundfile as sf
import torch
from PIL import Image as PILImage

from conftest import make_run_dir
from mio.api import MIO
from mio.cli.main import main
from mio.generate import DecodingConfig
from mio.segments import Message, Text

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")
from mio.serve import ServeConfig, create_app, running_server  # noqa: E402 -- needs the serve extra, checked above
from mio.serve.worker import ChatJob, QueueFull, StopText, Worker, stop_at  # noqa: E402

KEY = "test-key"
MODEL = "tiny"
MAX_BODY = 2**20


@pytest.fixture(scope="module")
def server(tmp_path_factory, text_tokenizer):
    """The base URL of a server on 127.0.0.1 (a free port), run in a background thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the one_thread fixture does, for the whole module's server
    mio = MIO.from_pretrained(make_run_dir(tmp_path_factory.mktemp("run"), text_tokenizer), device="cpu")
    app = create_app(mio, ServeConfig(model_name=MODEL, api_key=KEY, max_body_bytes=MAX_BODY, queue_size=4))
    with running_server(app) as url:
        yield url
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=60)


def ask(client, content="what colour is the shape?", **kw):
    kw.setdefault("max_tokens", 8)
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}], seed=0, **kw)


def png_data_uri(color="red") -> str:
    buf = io.BytesIO()
    PILImage.new("RGB", (40, 30), color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def post(server, body: bytes | str, key: str | None = KEY, content_type="application/json") -> httpx.Response:
    headers = {"Content-Type": content_type} | ({"Authorization": f"Bearer {key}"} if key else {})
    return httpx.post(f"{server}/v1/chat/completions", content=body, headers=headers, timeout=60)


def error_of(response: httpx.Response) -> dict:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def test_health_and_models(server, client):
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_text_reply_with_usage_and_finish_reason(client):
    reply = ask(client, temperature=0)
    assert reply.object == "chat.completion" and reply.model == MODEL
    assert isinstance(reply.choices[0].message.content, str)
    # The random model does not write its stop token within 8 tokens: the limit ends the reply.
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 8
    assert reply.usage.prompt_tokens > 0 and reply.usage.total_tokens == reply.usage.prompt_tokens + 8
    assert ask(client, temperature=0, max_tokens=16, stop=[reply.choices[0].message.content[:2] or "x"]
               ).choices[0].finish_reason == "stop"


def test_image_input(client):
    content = [{"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": png_data_uri()}}]
    assert isinstance(ask(client, content).choices[0].message.content, str)


def test_video_input_as_a_file_or_as_frames(server, client, tmp_path):
    from mio.media.video import write_mp4

    mp4 = write_mp4([PILImage.new("RGB", (32, 32), c) for c in ("red", "green", "blue", "white")], tmp_path / "c.mp4")
    clip = "data:video/mp4;base64," + base64.b64encode(mp4.read_bytes()).decode()
    as_file = [{"type": "text", "text": "what happens?"}, {"type": "video_url", "video_url": {"url": clip}}]
    as_frames = [{"type": "video", "video": [png_data_uri("red"), png_data_uri("blue")]}]
    for content in (as_file, as_frames):
        assert isinstance(ask(client, content).choices[0].message.content, str)
    broken = {"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": "data:video/mp4;base64," + base64.b64encode(b"junk").decode()}}]}]}
    response = post(server, json.dumps(broken))
    assert response.status_code == 400 and "messages.0.content.0: video_url" in error_of(response)["message"]


def test_audio_output_is_a_wav(client):
    reply = ask(client, modalities=["text", "audio"], audio={"voice": "alloy", "format": "wav"})
    audio = reply.choices[0].message.audio
    wave, rate = sf.read(io.BytesIO(base64.b64decode(audio.data)))
    assert audio.id and rate > 0 and len(wave) > 0


def test_image_output_is_a_png(client):
    reply = ask(client, max_tokens=12, extra_body={"output_modalities": ["image"]})
    images = reply.choices[0].message.images
    assert images and images[0]["type"] == "image_url"
    url = images[0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert PILImage.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).format == "PNG"


def test_streaming_concatenates_to_the_reply(server, client):
    whole = ask(client, temperature=0).choices[0].message.content
    assert whole, "the tiny model wrote no text; the comparison below would be empty"
    chunks = list(ask(client, temperature=0, stream=True))
    assert sum(bool(c.choices[0].delta.content) for c in chunks) > 1  # text arrives in pieces
    assert chunks and all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole
    assert chunks[-1].choices[0].finish_reason == "length"
    with_usage = list(ask(client, temperature=0, stream=True, stream_options={"include_usage": True}))
    assert with_usage[-1].choices == [] and with_usage[-1].usage.completion_tokens == 8
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 4}
    with httpx.stream("POST", f"{server}/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {KEY}"}) as response:
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert response.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "data: [DONE]" and all(json.loads(e[6:])["choices"] for e in events[:-1])


def test_stop_string_ends_the_text(client):
    whole = ask(client, temperature=0, max_tokens=16).choices[0].message.content
    if len(whole) < 2:
        pytest.skip("the tiny model wrote too little text to cut")
    stop = whole[len(whole) // 2:][:3]
    cut = ask(client, temperature=0, max_tokens=16, stop=[stop]).choices[0].message.content
    assert cut == whole[:whole.index(stop)]


def test_api_key_is_required(server):
    for key in (None, "wrong-key"):
        response = post(server, json.dumps({"messages": [{"role": "user", "content": "hi"}]}), key=key)
        assert response.status_code == 401 and error_of(response)["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        ask(openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0))


def test_bad_requests_are_refused_and_the_server_lives_on(server, client):
    assert post(server, "{not json").status_code == 400
    assert "JSON" in error_of(post(server, "{not json"))["message"]
    assert post(server, "[]").status_code == 400
    assert post(server, "{}", content_type="text/plain").status_code == 400
    huge = json.dumps({"messages": [{"role": "user", "content": "x" * (MAX_BODY + 10)}]})
    assert post(server, huge).status_code == 413
    unknown = post(server, json.dumps({"messages": [{"role": "user", "content": "hi"}], "frobnicate": 1}))
    assert unknown.status_code == 400 and error_of(unknown)["param"] == "frobnicate"
    wrong_type = post(server, json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "8"}))
    assert wrong_type.status_code == 400 and error_of(wrong_type)["param"] == "max_tokens"

    broken = [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"junk").decode()}}]
    with pytest.raises(openai.BadRequestError) as e:
        ask(client, broken)
    assert e.value.status_code == 400 and "messages.0.content.0" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        ask(client, [{"type": "image_url", "image_url": {"url": "/etc/hostname"}}])
    assert "local paths are not allowed" in e.value.message
    for bad in ({"temperature": -1}, {"max_tokens": 0}, {"top_p": 2.0}):
        with pytest.raises(openai.BadRequestError) as e:
            ask(client, **bad)
        assert e.value.body["param"] == next(iter(bad))
    with pytest.raises(openai.BadRequestError, match="last message"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "assistant", "content": "hi"}], max_tokens=4)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="other", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert isinstance(ask(client, temperature=0).choices[0].message.content, str)


def test_stop_text_holds_back_a_possible_stop_string():
    cut = StopText(["END"])
    assert cut.feed("abcE") == ("abc", False)
    assert cut.feed("N") == ("", False)
    assert cut.feed("Dxyz") == ("", True)
    assert [s.text for s in stop_at([Text("say E"), Text("Nough"), Text("!")], ["END"])] == ["say ", "ENough", "!"]


def test_a_full_queue_is_refused_at_once():
    worker = Worker(mio=None, queue_size=0)  # not started: nothing is served, so the one place is taken at once
    with pytest.raises(QueueFull):
        asyncio.run(anext(worker.stream(ChatJob(messages=[]))))


def test_serve_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--help"])
    assert e.value.code == 0 and "--api-key" in capsys.readouterr().out


@pytest.fixture(scope="module")
def tiny_mio(tmp_path_factory, text_tokenizer):
    return MIO.from_pretrained(make_run_dir(tmp_path_factory.mktemp("batched"), text_tokenizer), device="cpu")


async def _collect(worker: Worker, job: ChatJob, delay: float = 0.0) -> str:
    await asyncio.sleep(delay)
    return "".join(s.text for s in [s async for s in worker.stream(job)] if isinstance(s, Text))


def test_requests_join_the_running_batch_and_decode_as_alone(tiny_mio, one_thread):
    greedy = DecodingConfig.greedy()
    jobs = [ChatJob([Message("user", f"question {i}")], decoding=greedy, overrides={"max_new_tokens": 24})
            for i in range(4)]
    alone = ["".join(s.text for s in tiny_mio.stream_chat(j.messages, decoding=greedy, max_new_tokens=24)
                     if isinstance(s, Text)) for j in jobs]
    worker = Worker(tiny_mio, queue_size=8, max_batch=3)  # fewer slots than requests: the fourth waits
    seen_running: list[int] = []

    async def main() -> list[str]:
        worker.start()
        watch = asyncio.create_task(_watch(worker, seen_running))
        # Staggered: later requests arrive while earlier ones are decoding.
        replies = await asyncio.gather(*[_collect(worker, j, delay=0.02 * i) for i, j in enumerate(jobs)])
        watch.cancel()
        return replies

    try:
        assert asyncio.run(main()) == alone
    finally:
        worker.close()
    assert max(seen_running) > 1, "no two requests were ever decoded in one batch"
    assert all(j.usage.completion_tokens > 0 and j.finish_reason in ("stop", "length") for j in jobs)


async def _watch(worker: Worker, seen: list[int]) -> None:
    while True:
        seen.append(worker.running)
        await asyncio.sleep(0.005)


def test_a_request_whose_client_leaves_frees_its_slot(tiny_mio, one_thread):
    worker = Worker(tiny_mio, queue_size=4, max_batch=2)
    long = ChatJob([Message("user", "talk")], decoding=DecodingConfig.greedy(), overrides={"max_new_tokens": 400})

    async def main() -> None:
        worker.start()
        reply = worker.stream(long)
        await anext(reply)
        await reply.aclose()  # the client is gone after one piece
        for _ in range(400):
            if worker.running == 0:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the abandoned request still holds its slot")

    try:
        asyncio.run(main())
        short = ChatJob([Message("user", "hi")], decoding=DecodingConfig.greedy(), overrides={"max_new_tokens": 4})
        asyncio.run(_collect(worker, short))
        assert short.usage.completion_tokens <= 4 and long.usage is None
    finally:
        worker.close()
