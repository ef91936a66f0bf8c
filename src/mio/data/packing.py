"""Masked packing: documents packed into fixed-length rows, attention kept inside each document.

A row of `context_length` tokens holds several documents back to back. Every token carries
its document id (-1 for padding) and its position inside its document, which restarts at 0
for each document (torchtitan's convention: document boundaries follow from positions).
`mio.model.document_mask` turns document ids into the 4-D boolean mask that makes attention
causal within a document and blind across documents, so a packed batch gives exactly the
per-document loss of running each document alone.

Labels are aligned with inputs: `labels[t]` is the id the model must predict at `t` (the
next token of the same document where that token is a loss target, else -100). A
document's last token therefore predicts nothing, exactly as when it runs alone.

Over-long documents (longer than the context) are split by one rule: cut as late as
possible, but never inside a media block; each piece becomes a document of its own. A
document whose single media block is longer than the context cannot be split and is dropped
(and counted in `PackingStats.dropped`).

Rows are filled by first-fit decreasing over a buffer of documents; documents of rows that
come out under-filled are carried into the next buffer, which keeps padding well under 1%.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from mio.data.encode import Encoded

log = logging.getLogger(__name__)

IGNORE = -100


@dataclass
class PackedBatch:
    """One batch of rows, every tensor [batch, context_length]."""

    input_ids: torch.Tensor
    labels: torch.Tensor
    position_ids: torch.Tensor
    document_ids: torch.Tensor
    """Document index within its row; -1 marks padding."""
    data_type_ids: torch.Tensor
    """Index into `data_types` of the document each token belongs to (-1 for padding)."""
    data_types: list[str]

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch(
            *(t.to(device) for t in (self.input_ids, self.labels, self.position_ids, self.document_ids, self.data_type_ids)),
            self.data_types,
        )

    @property
    def num_tokens(self) -> int:
        return self.input_ids.numel()

    @property
    def num_pad(self) -> int:
        return int((self.document_ids < 0).sum())


@dataclass
class PackingStats:
    rows: int = 0
    tokens: int = 0
    pad: int = 0
    split: int = 0
    dropped: int = 0

    @property
    def pad_fraction(self) -> float:
        return self.pad / max(1, self.tokens + self.pad)


MAX_DROPPED_IN_A_ROW = 100
"""A stream whose documents are this many times in a row too long for a row is refused (it
would otherwise be read forever without one row filled)."""


def split_overlong(doc: Encoded, context_length: int, open_ids: set[int], close_ids: set[int]) -> list[Encoded]:
    """Split a document longer than `context_length` at the latest cut outside any media block.

    Returns [] when no valid cut exists (a single media block longer than the context)."""
    if len(doc) <= context_length:
        return [doc]
    # safe[p]: a cut before token p leaves no media block open.
    safe, depth = [True], 0
    for t in doc.ids:
        depth += (t in open_ids) - (t in close_ids)
        safe.append(depth <= 0)
    pieces, start = [], 0
    while len(doc) - start > context_length:
        cut = next((p for p in range(start + context_length, start, -1) if safe[p]), None)
        if cut is None:
            return []
        pieces.append(Encoded(doc.ids[start:cut], doc.loss[start:cut], doc.data_type))
        start = cut
    pieces.append(Encoded(doc.ids[start:], doc.loss[start:], doc.data_type))
    return pieces


def first_fit_decreasing(lengths: list[int], capacity: int) -> list[list[int]]:
    """Bin-pack item lengths into rows of `capacity`; returns item indices per row."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    rows: list[list[int]] = []
    free: list[int] = []
    for i in order:
        n = lengths[i]
        slot = next((r for r, f in enumerate(free) if f >= n), None)
        if slot is None:
            rows.append([i])
            free.append(capacity - n)
        else:
            rows[slot].append(i)
            free[slot] -= n
    return rows


class Packer:
    """Turns a stream of documents into packed batches.

    Each round gathers `buffer_rows` rows' worth of new documents and packs them with the
    documents carried over; rows filled below `min_fill` (the emptiest, at most a quarter
    of a buffer) are carried to the next round. More buffer = less padding, more memory.
    """

    def __init__(
        self,
        context_length: int,
        batch_size: int,
        pad_id: int,
        open_ids: Iterable[int] = (),
        close_ids: Iterable[int] = (),
        buffer_rows: int = 32,
        min_fill: float = 0.99,
    ):
        if context_length < 2 or batch_size < 1:
            raise ValueError("context_length must be >= 2 and batch_size >= 1")
        self.context_length = context_length
        self.batch_size = batch_size
        self.pad_id = pad_id
        self.open_ids, self.close_ids = set(open_ids), set(close_ids)
        self.buffer_rows = max(buffer_rows, batch_size)
        self.min_fill = min_fill
        self.stats = PackingStats()
        self.pending: list[list[Encoded]] = []  # rows packed, not yet emitted
        self.carry: list[Encoded] = []  # documents waiting for a fuller row

    # -- resumable state: what was pulled from the stream but not yet trained on --

    def state_dict(self) -> dict:
        enc = lambda d: {"ids": d.ids, "loss": d.loss, "type": d.data_type}  # noqa: E731
        return {"pending": [[enc(d) for d in row] for row in self.pending], "carry": [enc(d) for d in self.carry]}

    def load_state_dict(self, state: dict) -> None:
        dec = lambda d: Encoded(list(d["ids"]), list(d["loss"]), d["type"])  # noqa: E731
        self.pending = [[dec(d) for d in row] for row in state["pending"]]
        self.carry = [dec(d) for d in state["carry"]]

    def batches(self, stream: Iterator[Encoded]) -> Iterator[PackedBatch]:
        """Pack documents from `stream` (usually infinite) into batches, forever or until it ends."""
        exhausted = False
        while True:
            while len(self.pending) < self.batch_size and not exhausted:
                exhausted = self._fill(stream)
            if not self.pending:
                return
            if len(self.pending) < self.batch_size and exhausted:
                rows, self.pending = self.pending, []
            else:
                rows, self.pending = self.pending[: self.batch_size], self.pending[self.batch_size :]
            yield self._collate(rows)

    def _fill(self, stream: Iterator[Encoded]) -> bool:
        """One packing round: returns True when the stream is exhausted."""
        docs, self.carry = self.carry, []
        new_tokens, budget = 0, self.buffer_rows * self.context_length
        exhausted, dropped_in_a_row = False, 0
        while new_tokens < budget:
            try:
                doc = next(stream)
            except StopIteration:
                exhausted = True
                break
            pieces = split_overlong(doc, self.context_length, self.open_ids, self.close_ids)
            if not pieces:
                self.stats.dropped += 1
                dropped_in_a_row += 1
                log.warning("dropped a %d-token %s document: a media block is longer than the context", len(doc), doc.data_type)
                if dropped_in_a_row >= MAX_DROPPED_IN_A_ROW:
                    raise ValueError(f"{dropped_in_a_row} documents in a row hold a media block longer than "
                                     f"context_length {self.context_length}: raise context_length")
            else:
                dropped_in_a_row = 0
            self.stats.split += len(pieces) > 1
            docs.extend(pieces)
            new_tokens += sum(len(p) for p in pieces)
        rows = [[docs[i] for i in row] for row in first_fit_decreasing([len(d) for d in docs], self.context_length)]
        rows.sort(key=lambda row: -sum(len(d) for d in row))
        # The emptiest rows (at most a quarter of a buffer) wait for the next round, where
        # new documents can fill them; bounding the carry guarantees progress.
        threshold = self.min_fill * self.context_length
        keep = 0 if exhausted else min(self.buffer_rows // 4, sum(sum(len(d) for d in row) < threshold for row in rows))
        for row in rows[len(rows) - keep :]:
            self.carry.extend(row)
        self.pending.extend(rows[: len(rows) - keep])
        return exhausted

    def _collate(self, rows: list[list[Encoded]]) -> PackedBatch:
        batch = collate_rows(rows, self.context_length, self.pad_id)
        self.stats.rows += len(rows)
        self.stats.pad += batch.num_pad
        self.stats.tokens += batch.num_tokens - batch.num_pad
        return batch


def collate_rows(rows: list[list[Encoded]], length: int, pad_id: int) -> PackedBatch:
    """Lay out rows of documents into tensors of width `length` (documents must fit)."""
    b = len(rows)
    input_ids = torch.full((b, length), pad_id, dtype=torch.long)
    labels = torch.full((b, length), IGNORE, dtype=torch.long)
    position_ids = torch.zeros((b, length), dtype=torch.long)
    document_ids = torch.full((b, length), -1, dtype=torch.long)
    data_type_ids = torch.full((b, length), -1, dtype=torch.long)
    data_types: list[str] = []
    for r, row in enumerate(rows):
        start = 0
        for d, doc in enumerate(row):
            n = len(doc)
            if start + n > length:
                raise ValueError(f"row {r} holds {start + n} tokens, more than the context {length}")
            ids = torch.as_tensor(doc.ids, dtype=torch.long)
            loss = torch.as_tensor(doc.loss, dtype=torch.bool)
            input_ids[r, start : start + n] = ids
            target = torch.where(loss[1:], ids[1:], torch.full_like(ids[1:], IGNORE))
            labels[r, start : start + n - 1] = target
            position_ids[r, start : start + n] = torch.arange(n)
            document_ids[r, start : start + n] = d
            if doc.data_type not in data_types:
                data_types.append(doc.data_type)
            data_type_ids[r, start : start + n] = data_types.index(doc.data_type)
            start += n
    return PackedBatch(input_ids, labels, position_ids, document_ids, data_type_ids, data_types)


def padded_batches(docs: Iterable[Encoded], batch_size: int, context_length: int, pad_id: int) -> Iterator[PackedBatch]:
    """The usual baseline: one document per row, padded to the longest in the batch.

    Documents longer than the context are cut to it (the baseline's usual truncation)."""
    chunk: list[Encoded] = []
    for doc in docs:
        chunk.append(Encoded(doc.ids[:context_length], doc.loss[:context_length], doc.data_type))
        if len(chunk) == batch_size:
            yield collate_rows([[d] for d in chunk], max(len(d) for d in chunk), pad_id)
            chunk = []
    if chunk:
        yield collate_rows([[d] for d in chunk], max(len(d) for d in chunk), pad_id)
