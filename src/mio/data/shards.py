"""Pre-tokenized shards: encoded documents on disk, read back without copying.

Media are tokenized once, offline (`mio prepare`), and training streams the result. A shard
is a directory:

    tokens.bin   int32 ids of all documents, concatenated
    loss.bin     uint8 loss mask (1 = target), same length as tokens.bin
    index.npy    int64 offsets, n_docs + 1: document i is tokens[index[i]:index[i+1]]
    types.npy    uint16 per document: its data type, an index into meta["data_types"]
    meta.json    format version, vocab size and layout, counts, per-type token totals,
                 and the size and sha256 of each file

Why this format: `np.memmap` gives zero-copy random access to any document (the mixture
reads documents in shuffled order), needs nothing beyond numpy, and a position in the data
is just a document index, so resuming is trivial. Arrow via `datasets` would add a large
dependency and buys nothing for flat int arrays.

Writing is atomic: a shard is written into a hidden temporary directory beside its target
and renamed into place when complete, so a shard directory either exists whole or not at
all. Opening checks every file's size against `meta.json` (cheap, catches truncation);
`verify=True` also checks the sha256 checksums (reads everything). Any problem raises one
`ShardError` naming the shard and what is wrong.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mio.data.encode import Encoded

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
TOKENS_FILE, LOSS_FILE, INDEX_FILE, TYPES_FILE, META_FILE = "tokens.bin", "loss.bin", "index.npy", "types.npy", "meta.json"
TOKEN_DTYPE, LOSS_DTYPE, INDEX_DTYPE, TYPE_DTYPE = np.int32, np.uint8, np.int64, np.uint16
HASH_CHUNK = 1 << 24
"""Bytes read at a time when verifying checksums."""


class ShardError(ValueError):
    """A shard is missing, truncated, corrupt or of another format version."""


class ShardWriter:
    """Writes documents into one shard directory, atomically.

    Use as a context manager (or call `close()`); on an exception inside the `with` block
    the partial shard is removed and nothing appears at `directory`."""

    def __init__(self, directory: str | Path, vocab_size: int, layout: dict | None = None):
        self.directory = Path(directory)
        if self.directory.exists():
            raise FileExistsError(f"shard {self.directory} already exists")
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.directory.parent / f".{self.directory.name}.tmp-{os.getpid()}"
        if self._tmp.exists():
            shutil.rmtree(self._tmp)
        self._tmp.mkdir()
        self.vocab_size = vocab_size
        self.layout = layout or {}
        self._tokens = open(self._tmp / TOKENS_FILE, "wb")
        self._loss = open(self._tmp / LOSS_FILE, "wb")
        self._tokens_hash, self._loss_hash = hashlib.sha256(), hashlib.sha256()
        self._offsets = [0]
        self._types: list[int] = []
        self._type_names: dict[str, int] = {}
        self._type_tokens: dict[str, int] = {}
        self._closed = False

    def __len__(self) -> int:
        return len(self._types)

    @property
    def num_tokens(self) -> int:
        return self._offsets[-1]

    def append(self, doc: Encoded) -> None:
        """Add one document at the end of the shard."""
        if self._closed:
            raise ShardError(f"shard {self.directory}: append after close")
        n = len(doc.ids)
        if n == 0 or len(doc.loss) != n:
            raise ValueError(f"shard {self.directory}: a document needs ids and a loss mask of equal, non-zero length")
        ids = np.asarray(doc.ids, dtype=np.int64)
        if ids.min() < 0 or ids.max() >= self.vocab_size:
            raise ValueError(f"shard {self.directory}: id out of range [0, {self.vocab_size}) in a {doc.data_type} document")
        tokens = ids.astype(TOKEN_DTYPE).tobytes()
        loss = np.asarray(doc.loss, dtype=bool).astype(LOSS_DTYPE).tobytes()
        self._tokens.write(tokens)
        self._loss.write(loss)
        self._tokens_hash.update(tokens)
        self._loss_hash.update(loss)
        self._offsets.append(self._offsets[-1] + n)
        code = self._type_names.setdefault(doc.data_type, len(self._type_names))
        self._types.append(code)
        self._type_tokens[doc.data_type] = self._type_tokens.get(doc.data_type, 0) + n

    def close(self) -> Path:
        """Finish the files, write meta.json and move the shard into place."""
        if self._closed:
            return self.directory
        self._closed = True
        for f in (self._tokens, self._loss):
            f.flush()
            os.fsync(f.fileno())
            f.close()
        np.save(self._tmp / INDEX_FILE, np.asarray(self._offsets, dtype=INDEX_DTYPE))
        np.save(self._tmp / TYPES_FILE, np.asarray(self._types, dtype=TYPE_DTYPE))
        n_tokens = self.num_tokens
        meta = {
            "format_version": FORMAT_VERSION,
            "vocab_size": self.vocab_size,
            "layout": self.layout,
            "num_docs": len(self._types),
            "num_tokens": n_tokens,
            "data_types": list(self._type_names),
            "tokens_per_type": self._type_tokens,
            "docs_per_type": {name: self._types.count(code) for name, code in self._type_names.items()},
            "files": {
                TOKENS_FILE: {"bytes": n_tokens * np.dtype(TOKEN_DTYPE).itemsize, "sha256": self._tokens_hash.hexdigest()},
                LOSS_FILE: {"bytes": n_tokens * np.dtype(LOSS_DTYPE).itemsize, "sha256": self._loss_hash.hexdigest()},
                INDEX_FILE: {"bytes": (self._tmp / INDEX_FILE).stat().st_size, "sha256": _sha256(self._tmp / INDEX_FILE)},
                TYPES_FILE: {"bytes": (self._tmp / TYPES_FILE).stat().st_size, "sha256": _sha256(self._tmp / TYPES_FILE)},
            },
        }
        (self._tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        os.rename(self._tmp, self.directory)
        log.debug("wrote shard %s: %d documents, %d tokens", self.directory, meta["num_docs"], n_tokens)
        return self.directory

    def abort(self) -> None:
        """Drop the partial shard."""
        self._closed = True
        for f in (self._tokens, self._loss):
            f.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class Shard:
    """One shard opened for reading: a sequence of `Encoded` documents backed by memmaps."""

    def __init__(self, directory: str | Path, verify: bool = False):
        self.directory = Path(directory)
        meta_path = self.directory / META_FILE
        if not self.directory.is_dir():
            raise ShardError(f"shard {self.directory}: directory not found")
        if not meta_path.is_file():
            raise ShardError(f"shard {self.directory}: missing {META_FILE}")
        try:
            meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ShardError(f"shard {self.directory}: {META_FILE} is not valid JSON ({e})") from None
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise ShardError(f"shard {self.directory}: format version {version!r}, this code reads {FORMAT_VERSION}")
        self.meta = meta
        for name, expected in meta["files"].items():
            path = self.directory / name
            if not path.is_file():
                raise ShardError(f"shard {self.directory}: missing {name}")
            size = path.stat().st_size
            if size != expected["bytes"]:
                raise ShardError(
                    f"shard {self.directory}: {name} has {size} bytes, meta.json says {expected['bytes']} (truncated or corrupt)"
                )
            if verify and _sha256(path) != expected["sha256"]:
                raise ShardError(f"shard {self.directory}: {name} fails its sha256 checksum (corrupt)")
        try:
            self.index = np.load(self.directory / INDEX_FILE)
            self.types = np.load(self.directory / TYPES_FILE)
        except ValueError as e:
            raise ShardError(f"shard {self.directory}: unreadable index ({e})") from None
        n_docs, n_tokens = meta["num_docs"], meta["num_tokens"]
        if (
            len(self.index) != n_docs + 1
            or len(self.types) != n_docs
            or self.index[0] != 0
            or self.index[-1] != n_tokens
            or (n_docs and np.any(np.diff(self.index) <= 0))
        ):
            raise ShardError(f"shard {self.directory}: index does not match meta.json ({n_docs} documents, {n_tokens} tokens)")
        self.data_types: list[str] = list(meta["data_types"])
        if n_docs and int(self.types.max()) >= len(self.data_types):
            raise ShardError(f"shard {self.directory}: a document's data type is out of range")
        # np.memmap refuses empty files; an empty shard simply has empty arrays.
        if n_tokens:
            self.tokens = np.memmap(self.directory / TOKENS_FILE, dtype=TOKEN_DTYPE, mode="r", shape=(n_tokens,))
            self.loss = np.memmap(self.directory / LOSS_FILE, dtype=LOSS_DTYPE, mode="r", shape=(n_tokens,))
        else:
            self.tokens, self.loss = np.zeros(0, TOKEN_DTYPE), np.zeros(0, LOSS_DTYPE)

    def __len__(self) -> int:
        return len(self.types)

    @property
    def lengths(self) -> np.ndarray:
        """Token count of every document, without reading any."""
        return np.diff(self.index)

    @property
    def token_counts(self) -> dict[str, int]:
        """Tokens per data type in this shard."""
        return dict(self.meta["tokens_per_type"])

    def data_type(self, i: int) -> str:
        return self.data_types[int(self.types[i])]

    def __getitem__(self, i: int) -> Encoded:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"document {i} out of range for shard {self.directory} ({n} documents)")
        i %= n
        lo, hi = int(self.index[i]), int(self.index[i + 1])
        # Encoded holds lists (the packer's state and collation expect them); the slice itself is zero-copy.
        return Encoded(self.tokens[lo:hi].tolist(), (self.loss[lo:hi] != 0).tolist(), self.data_type(i))

    def __iter__(self) -> Iterator[Encoded]:
        return (self[i] for i in range(len(self)))


class Dataset:
    """Several shards read as one sequence of documents, in shard order."""

    def __init__(self, shards: list[Shard]):
        self.shards = shards
        self._starts = [0]
        for s in shards:
            self._starts.append(self._starts[-1] + len(s))

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, i: int) -> Encoded:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"document {i} out of range ({n} documents)")
        i %= n
        k = bisect.bisect_right(self._starts, i) - 1
        return self.shards[k][i - self._starts[k]]

    def __iter__(self) -> Iterator[Encoded]:
        return (doc for s in self.shards for doc in s)

    @property
    def lengths(self) -> np.ndarray:
        """Token count of every document, without reading any."""
        return np.concatenate([s.lengths for s in self.shards]) if self.shards else np.zeros(0, INDEX_DTYPE)

    @property
    def token_counts(self) -> dict[str, int]:
        """Tokens per data type over all shards."""
        out: dict[str, int] = {}
        for s in self.shards:
            for name, n in s.token_counts.items():
                out[name] = out.get(name, 0) + n
        return out

    @property
    def num_tokens(self) -> int:
        return sum(s.meta["num_tokens"] for s in self.shards)

    @property
    def vocab_sizes(self) -> set[int]:
        """The vocabulary sizes the shards were written for (one, unless they were mixed up)."""
        return {int(s.meta["vocab_size"]) for s in self.shards}

    @property
    def layouts(self) -> list[dict]:
        """The distinct media layouts the shards were written for (those that recorded one)."""
        out: list[dict] = []
        for s in self.shards:
            layout = s.meta.get("layout") or {}
            if layout and layout not in out:
                out.append(layout)
        return out


def find_shards(path: str | Path) -> list[Path]:
    """Shard directories at or under `path`, sorted by path; hidden (temporary) ones skipped."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"shard directory not found: {path}")
    if (path / META_FILE).is_file():
        return [path]
    found = []
    for meta in sorted(path.rglob(META_FILE)):
        rel = meta.parent.relative_to(path)
        if not any(part.startswith(".") for part in rel.parts):
            found.append(meta.parent)
    return found


def open_dataset(path: str | Path, verify: bool = False) -> Dataset:
    """Open a shard directory, or every shard under a directory, as one sequence of `Encoded`."""
    dirs = find_shards(path)
    if not dirs:
        raise ShardError(f"no shards under {path}")
    return Dataset([Shard(d, verify=verify) for d in dirs])
