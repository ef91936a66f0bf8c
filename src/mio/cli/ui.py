"""`mio ui`: a web UI to chat with one model in the browser.

    mio ui --model runs/sft            # then open http://127.0.0.1:7860

Type text, attach images or audio (or record from the microphone); replies stream in with
text, pictures, videos (animated GIFs) and speech (an audio player). Settings: mode,
output modalities, decoding, max new tokens, seed. Listens on this machine only by
default; no share links, no analytics. `mio serve --ui` puts the same UI at /ui beside the
OpenAI-compatible API. Needs the `ui` extra (gradio).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from mio.api import MIO
from mio.cli.serve import _is_loopback

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="run directory (model, tokenizers, run.json)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 | mps")
    p.add_argument("--queue-size", type=int, default=16, help="most turns waiting for the model (more: 'busy')")


def run(args: argparse.Namespace) -> int:
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no telemetry, no version check
    try:
        import uvicorn

        from mio.serve.ui import create_ui_app
    except ImportError as e:
        raise OSError(f"{e}; `mio ui` needs the ui extra: pip install 'mio[ui]'") from None
    if args.queue_size < 0:
        raise ValueError("--queue-size must be >= 0")
    if not _is_loopback(args.host):
        log.warning("listening on %s: anyone who can reach it can use the model (the UI has no login)", args.host)
    mio = MIO.from_pretrained(args.model, device=args.device)
    log.info("chat with %s at http://%s:%d/", Path(args.model).resolve().name, args.host, args.port)
    uvicorn.run(create_ui_app(mio, args.queue_size), host=args.host, port=args.port, log_level="info")
    return 0
