"""Serving MIO: an OpenAI-compatible chat-completions server (`mio serve`).

`create_app(mio, config)` builds the FastAPI app (`mio.serve.app`) over a generation worker
(`mio.serve.worker`); the wire format is `mio.serve.protocol`. Needs the `serve` extra
(fastapi, uvicorn).
"""

from mio.serve.app import APIError, ServeConfig, create_app

__all__ = ["APIError", "ServeConfig", "create_app"]
