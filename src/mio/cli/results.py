"""A benchmark command's result: JSON on stdout (the command's output) and, if asked, in a file."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def emit(result: dict, path: str | Path | None) -> None:
    """Print `result` as indented JSON and write it to `path` when given."""
    text = json.dumps(result, indent=2)
    sys.stdout.write(text + "\n")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n")
        log.info("wrote %s", path)
