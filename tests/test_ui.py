"""The web UI (`mio ui`, `mio serve --ui`): a real server on a tiny model, driven in headless
Chromium (Debian's, through Playwright) the way a person uses it: attach, type, send, look."""

from __future__ import annotations

import asyncio
import re
import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from PIL import Image as PILImage

from conftest import make_run_dir
from mio.api import MIO

pytest.importorskip("gradio", reason="the ui extra (gradio) is not installed")
uvicorn = pytest.importorskip("uvicorn")
try:
    from playwright import sync_api as playwright
except ImportError:  # the browser tests skip; the others run
    playwright = None
from mio.serve import ServeConfig, create_app, running_server  # noqa: E402 -- needs the extras, checked above
from mio.serve.ui import _responder, build_ui, create_ui_app, mount_ui  # noqa: E402
from mio.serve.worker import Worker  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Headless and offline: nothing but the page under test is fetched.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REPLY_MS = 30_000  # the longest wait for anything on the page (the tiny model answers in a second or two)
pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")  # gradio's own use of pandas


@pytest.fixture(scope="module")
def mio(tmp_path_factory, text_tokenizer):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the one_thread fixture does, for the whole module's servers
    yield MIO.from_pretrained(make_run_dir(tmp_path_factory.mktemp("run"), text_tokenizer), device="cpu")
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ui_url(mio):
    """`mio ui`'s app, serving."""
    with running_server(create_ui_app(mio, queue_size=4)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    if playwright is None:
        pytest.skip("playwright is not installed (pip install playwright; CI installs it with the test extra)")
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (apt-get install chromium; CI installs it)")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, ui_url):
    """A fresh page of the UI, ready: greedy decoding, a few tokens, seed 0."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(REPLY_MS)
    page.goto(ui_url)
    page.locator("#mio-custom input").check()
    page.locator("#mio-temperature input[type=number]").fill("0")
    page.locator("#mio-max-tokens input").fill("12")
    yield page
    context.close()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """A small PNG, and a .png file holding garbage."""
    folder = tmp_path_factory.mktemp("uploads")
    PILImage.new("RGB", (40, 30), "red").save(folder / "red.png")
    (folder / "broken.png").write_bytes(b"these bytes are not a picture")
    return folder / "red.png", folder / "broken.png"


def send(page, text: str, *files) -> None:
    """Type a message, attach files (waiting for their upload), press enter."""
    if files:
        page.locator("#mio-box input[type=file]").set_input_files([str(f) for f in files])
        playwright.expect(page.locator("#mio-box [aria-label='File thumbnail']")).to_have_count(len(files))
    page.locator("#mio-box textarea").fill(text)
    page.locator("#mio-box textarea").press("Enter")


def outputs(page, *modalities: str) -> None:
    for name in modalities:
        page.locator("#mio-outputs").get_by_label(name, exact=True).check()


def bot(page):
    """The last reply in the chat."""
    return page.locator("#mio-chat [data-testid=bot]").last


def test_image_in_text_out(page, pictures):
    outputs(page, "text")
    send(page, "what colour is the shape?", pictures[0])
    user = page.locator("#mio-chat [data-testid=user]")  # one per part of the message
    playwright.expect(user.filter(has_text="what colour is the shape?")).to_have_count(1)
    playwright.expect(user.locator("img")).to_have_attribute("src", re.compile(r"red\.png$"))  # the upload, shown
    playwright.expect(bot(page)).to_have_text(re.compile(r"\S"))
    assert "(an empty reply)" not in bot(page).inner_text()
    playwright.expect(page.locator("#mio-box textarea")).to_have_value("")  # the box is ready for the next turn


@pytest.mark.parametrize("modality, kind", [("image", "image/png"), ("video", "image/gif")])
def test_pictures_out_are_shown_inline(page, modality, kind):
    outputs(page, modality)
    page.locator("#mio-max-tokens input").fill("30")  # a video: at least two frames
    send(page, "Please generate a picture of a small yellow star")
    picture = bot(page).locator("img")
    playwright.expect(picture).to_have_count(1)
    picture.scroll_into_view_if_needed()  # the chat loads pictures lazily
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=picture.element_handle())
    fetched = page.evaluate("async src => { const r = await fetch(src); return [r.status, r.headers.get('content-type')]; }",
                            picture.get_attribute("src"))
    assert fetched == [200, kind]


def test_speech_out_is_a_playable_audio(page):
    page.locator("#mio-max-tokens input").fill("40")
    outputs(page, "speech")
    send(page, "say hello")
    audio = bot(page).locator("audio").first  # inside the player's shadow root, which the locator pierces
    playwright.expect(audio).to_have_attribute("src", re.compile(r".+"))
    # The browser decoded the WAV: a finite, positive duration (and the source fetches).
    page.wait_for_function("a => isFinite(a.duration) && a.duration > 0", arg=audio.element_handle())
    size = page.evaluate("async a => (await (await fetch(a.src)).arrayBuffer()).byteLength", audio.element_handle())
    assert size > 44  # more than a WAV header


def test_bad_upload_is_an_error_and_the_chat_goes_on(page, pictures):
    outputs(page, "text")
    send(page, "what is this?", pictures[1])
    playwright.expect(page.locator(".toast-body")).to_contain_text("broken.png: cannot read image")
    playwright.expect(page.locator("#mio-box textarea")).to_have_value("what is this?")  # kept to send again
    playwright.expect(page.locator("#mio-box [aria-label='File thumbnail']")).to_have_count(0)  # the bad file dropped
    playwright.expect(page.locator("#mio-chat [data-testid=user]")).to_have_count(0)
    assert "Traceback" not in page.content()
    page.locator("#mio-box textarea").press("Enter")
    playwright.expect(page.locator("#mio-chat [data-testid=user]")).to_have_text("what is this?")
    playwright.expect(bot(page)).to_have_text(re.compile(r"\S"))
    page.locator("#mio-new-chat").click()
    playwright.expect(page.locator("#mio-chat [data-testid=bot]")).to_have_count(0)


def test_decoding_options_out_of_range_are_errors(page):
    page.locator("#mio-max-tokens input").fill("0")
    send(page, "hi")
    playwright.expect(page.locator(".toast-body")).to_contain_text("max_new_tokens")
    playwright.expect(page.locator("#mio-box textarea")).to_have_value("hi")


def test_serve_ui_mounts_beside_the_api_behind_its_key(mio):
    app = create_app(mio, ServeConfig(model_name="tiny", api_key="k", queue_size=4))
    mount_ui(app, api_key="k")
    assert app.state.worker is not None
    with running_server(app) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get("/ui/").status_code == 200  # the page (a login form until the key is given)
            assert client.get("/ui/config").status_code == 401
            assert client.post("/ui/login", data={"username": "me", "password": "wrong"}).status_code == 400
            assert client.post("/ui/login", data={"username": "me", "password": "k"}).status_code == 200
            assert client.get("/ui/config").status_code == 200
            models = client.get("/v1/models", headers={"Authorization": "Bearer k"})
            assert models.json()["data"][0]["id"] == "tiny"


def test_text_streams_in_pieces(mio):
    """Each generated text piece updates the chat (the page shows the reply as it grows)."""
    worker = Worker(mio, queue_size=4)
    worker.start()

    async def turn() -> list[str]:
        respond = _responder(worker, build_ui(worker).GRADIO_CACHE)
        shown = []
        async for _box, chat, _context in respond({"text": "what colour is the shape?", "files": []}, [], [], "std",
                                                  ["text"], True, 0.0, 1.0, 12, 0):
            shown.append(chat[-1]["content"][0] if chat[-1]["role"] == "assistant" else "")
        return shown

    try:  # a thread of its own: playwright's sync API holds an event loop in this one
        with ThreadPoolExecutor(1) as pool:
            shown = pool.submit(asyncio.run, asyncio.wait_for(turn(), REPLY_MS / 1000)).result()
    finally:
        worker.close()
    texts = [s for s in shown if s]
    assert len(texts) > 1 and all(b.startswith(a) and len(b) > len(a) for a, b in zip(texts, texts[1:])), shown


def test_a_busy_model_or_a_video_upload(mio, tmp_path, monkeypatch):
    """A full queue is said in the page and the message goes back into the box; a video file
    is read as a video (its frames), anything else is refused by name."""
    from mio.media.video import write_mp4
    from mio.segments import Video
    from mio.serve import ui

    shown: list[str] = []
    monkeypatch.setattr(ui, "_error", lambda *messages: shown.extend(messages))
    busy = Worker(mio, queue_size=0)  # never started, no place in its queue: every turn is refused
    box = {"text": "hello", "files": []}

    async def turn() -> list[tuple]:
        respond = _responder(busy, build_ui(busy).GRADIO_CACHE)
        return [x async for x in respond(box, [], [], "std", ["text"], False, 1.0, 1.0, 8, 0)]

    with ThreadPoolExecutor(1) as pool:  # playwright's sync API may hold an event loop in this thread
        steps = pool.submit(asyncio.run, turn()).result()
    assert shown and "the model is busy" in shown[0]
    assert steps[-1][0] == box and steps[-1][1] == []  # the message back in the box, the chat as it was

    clip = write_mp4([PILImage.new("RGB", (32, 32), c) for c in ("red", "blue", "green", "white")], tmp_path / "c.mp4")
    assert isinstance(ui._upload(str(clip)), Video) and len(ui._upload(str(clip)).frames) == 4
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="notes.txt: attach images, audio or video files"):
        ui._upload(str(tmp_path / "notes.txt"))
