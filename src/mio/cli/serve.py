"""`mio serve`: an OpenAI-compatible chat-completions server for one model.

    mio serve --model runs/sft --port 8000 --api-key KEY
    curl -H "Authorization: Bearer KEY" http://127.0.0.1:8000/v1/chat/completions \\
         -H "Content-Type: application/json" -d '{"messages": [{"role": "user", "content": "hi"}]}'

Endpoints: GET /health, GET /v1/models, POST /v1/chat/completions (stream: true for
server-sent events). Speech out: "modalities": ["text", "audio"] (or "mode": "voice");
pictures out: "output_modalities": ["image"]. Needs the `serve` extra (fastapi, uvicorn).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
from pathlib import Path

from mio.api import MIO

log = logging.getLogger(__name__)

API_KEY_ENV = "MIO_API_KEY"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="run directory (model, tokenizers, run.json)")
    p.add_argument("--model-name", help="the model id clients use (default: the directory's name)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument("--api-key", help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV}; unset = open)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 | mps")
    p.add_argument("--max-body-mb", type=float, default=32.0, help="largest request body in MiB (larger: 413)")
    p.add_argument("--queue-size", type=int, default=16, help="most requests waiting for the model (more: 429)")
    p.add_argument("--max-batch", type=int,
                   help="most requests decoded together (cache slots; a guided one takes two; default: worker.MAX_BATCH)")
    p.add_argument("--allow-path", action="append", default=[], metavar="DIR",
                   help="let image_url name local files inside DIR (repeatable; default: data URIs only)")
    p.add_argument("--ui", action="store_true",
                   help="also serve the web UI at /ui (the API key, if any, is its password; needs the ui extra)")


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from mio.serve import ServeConfig, create_app
    except ImportError as e:
        raise OSError(f"{e}; `mio serve` needs the serve extra: pip install 'mio[serve]'") from None
    if args.ui:  # before the model loads, which takes minutes at full size
        os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
        try:
            from mio.serve.ui import mount_ui
        except ImportError as e:
            raise OSError(f"{e}; `mio serve --ui` needs the ui extra: pip install 'mio[ui]'") from None
    if args.max_body_mb <= 0 or args.queue_size < 0 or (args.max_batch is not None and args.max_batch < 2):
        raise ValueError("--max-body-mb must be > 0, --queue-size >= 0 and --max-batch >= 2")
    for folder in args.allow_path:
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"--allow-path {folder}: not a folder")
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    if api_key is None and not _is_loopback(args.host):
        log.warning("listening on %s without an API key: anyone who can reach it can use the model", args.host)
    mio = MIO.from_pretrained(args.model, device=args.device)
    config = ServeConfig(model_name=args.model_name or Path(args.model).resolve().name, api_key=api_key,
                         max_body_bytes=int(args.max_body_mb * 2**20), queue_size=args.queue_size,
                         allow_paths=[Path(p) for p in args.allow_path])
    if args.max_batch is not None:
        config.max_batch = args.max_batch
    log.info("serving %s as %r on http://%s:%d/v1", args.model, config.model_name, args.host, args.port)
    app = create_app(mio, config)
    if args.ui:
        mount_ui(app, "/ui", api_key=api_key)
        log.info("web UI on http://%s:%d/ui", args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
