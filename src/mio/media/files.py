"""Media given as a path or as the file's bytes: one way to get a name for messages and
something a decoder can read."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path


def readable(source: str | Path | bytes, what: str, missing: Callable[[Path], Exception]) -> tuple[str, Path | io.BytesIO]:
    """(name, stream): bytes are read from memory and named `<what> data`; a path must be a
    file, else `missing(path)` is raised."""
    if isinstance(source, bytes):
        return f"{what} data", io.BytesIO(source)
    path = Path(source)
    if not path.is_file():
        raise missing(path)
    return str(path), path
