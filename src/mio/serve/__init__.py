"""Serving MIO: an OpenAI-compatible chat-completions server (`mio serve`) and a web UI (`mio ui`).

`create_app(mio, config)` builds the FastAPI app (`mio.serve.app`) over a continuously
batching generation worker (`mio.serve.worker`); the wire format is `mio.serve.protocol`;
`mio.serve.ui` is the Gradio chat. Needs the `serve` extra (fastapi, uvicorn); the UI the
`ui` extra (gradio).
"""

from mio.serve.app import APIError, ServeConfig, create_app, running_server

__all__ = ["APIError", "ServeConfig", "create_app", "running_server"]
