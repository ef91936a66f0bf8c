"""Stage mixtures: one deterministic, resumable stream of documents drawn from many sources.

The paper (Table 9) gives each pre-training stage a batch ratio over four groups of data,
pair : lang : interleaved+video : speech = 12:2:0:2 (Stage I), 2:2:6:6 (Stage II) and
2:1:1:12 (Stage III), and says speech is then 12.5%, 37.5% and 75% of the tokens, i.e.
2/16, 6/16, 12/16. Speech documents are far longer than image-text pairs, so the ratios
hold only as TOKEN shares, not as document counts; that is how they are realised here.

Scheduling. Each group has a target share (its weight over the total). The next document
comes from the group whose realised tokens are furthest below its target (ties broken by a
seeded RNG), and within the group from the data type furthest below its share of the group
(equal split unless `type_weights` says otherwise). Each data type reads its documents in a
seeded shuffled order per epoch and starts a new epoch, with a new shuffle, when exhausted.
Greedy deficit filling keeps every realised share within one document's length of its
target at all times, whatever the document lengths.

Data parallelism. Every rank computes the same global stream (it needs only document
lengths, which the shard index gives without reading documents) and rank r of w yields
global documents r, r + w, r + 2w, ... So ranks never share a document within an epoch and
together they cover the global stream exactly.

Resuming. `state_dict()` is a small JSON-able dict (per-source epoch and cursor, token
counters, RNG state, global position); a mixture restored from it yields exactly the
documents the uninterrupted one would. The state is rank-independent, so a run can even
resume on a different number of ranks.

SFT is a group of its own (data type `sft`, whose shards hold `sft/<task>` documents, or
one `sft/<task>` source per task), so an SFT config is `ratios = {sft = 1}`.
"""

from __future__ import annotations

import logging
import math
import random
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mio.data.encode import PRETRAIN_TYPES, Encoded
from mio.data.shards import open_dataset

log = logging.getLogger(__name__)

SFT = "sft"
GROUPS: dict[str, tuple[str, ...]] = {
    "pair": ("image_text_pair",),
    "lang": ("language",),
    "interleaved_video": ("image_text_interleaved", "video_text_pair", "video_text_interleaved"),
    "speech": ("speech_text_pair",),
    SFT: (SFT,),
}
"""The paper's batch-ratio groups and the data types in each (SFT is its own group)."""

PAPER_STAGE_RATIOS: dict[str, dict[str, float]] = {
    "I": {"pair": 12.0, "lang": 2.0, "interleaved_video": 0.0, "speech": 2.0},
    "II": {"pair": 2.0, "lang": 2.0, "interleaved_video": 6.0, "speech": 6.0},
    "III": {"pair": 2.0, "lang": 1.0, "interleaved_video": 1.0, "speech": 12.0},
}
"""Table 9 of the paper: group weights of pre-training Stages I, II and III."""

STATE_VERSION = 1


def group_of(data_type: str) -> str:
    """The group a source data type belongs to (`sft` and `sft/<task>` -> `sft`)."""
    if data_type == SFT or data_type.startswith(SFT + "/"):
        return SFT
    for group, types in GROUPS.items():
        if data_type in types:
            return group
    raise ValueError(f"unknown data type {data_type!r}; known: {', '.join(PRETRAIN_TYPES)}, sft, sft/<task>")


@dataclass
class MixtureConfig:
    """Which shards a stage reads and in which token shares."""

    sources: dict[str, str] = field(default_factory=dict)
    """Data type -> shard directory (a shard, or a directory of shards). Data types are the six
    pre-training types, `sft` (all tasks) or `sft/<task>`."""
    ratios: dict[str, float] = field(default_factory=dict)
    """Group -> weight: groups are pair, lang, interleaved_video, speech, sft. Realised as token
    shares. The paper's stages are in `PAPER_STAGE_RATIOS`."""
    seed: int = 0
    """Seed of the per-epoch shuffles and of tie-breaking."""
    type_weights: dict[str, float] = field(default_factory=dict)
    """Data type -> weight within its group; unlisted sources weigh 1 (an equal split)."""

    def validate(self) -> None:
        for data_type, path in self.sources.items():
            group_of(data_type)
            if not path:
                raise ValueError(f"source {data_type!r} has an empty path")
        for group, weight in self.ratios.items():
            if group not in GROUPS:
                raise ValueError(f"unknown group {group!r} in ratios; groups are {', '.join(GROUPS)}")
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"ratio of group {group!r} must be a finite number >= 0, got {weight}")
        if sum(self.ratios.values()) <= 0:
            raise ValueError("ratios must give at least one group a positive weight")
        for data_type, weight in self.type_weights.items():
            if data_type not in self.sources:
                raise ValueError(f"type_weights names {data_type!r}, which has no source")
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"type weight of {data_type!r} must be a finite number >= 0, got {weight}")
        for group, weight in self.ratios.items():
            members = [t for t in self.sources if group_of(t) == group and self.type_weights.get(t, 1.0) > 0]
            if weight > 0 and not members:
                raise ValueError(
                    f"group {group!r} has weight {weight:g} but no source; add sources for one of: "
                    + ", ".join(GROUPS[group] + (("sft/<task>",) if group == SFT else ()))
                )


class _Source:
    """One data type's documents, read in a seeded shuffled order that changes every epoch."""

    def __init__(self, name: str, docs: Sequence[Encoded], lengths: np.ndarray, seed: int):
        self.name = name
        self.docs = docs
        self.lengths = lengths
        # crc32, not hash(): Python's string hash changes between processes.
        self._key = zlib.crc32(name.encode())
        self._seed = seed
        self.epoch = 0
        self.cursor = 0
        self.order = self._shuffle()

    def _shuffle(self) -> np.ndarray:
        return np.random.default_rng([self._seed, self._key, self.epoch]).permutation(len(self.docs))

    def next_index(self) -> int:
        if self.cursor == len(self.order):
            self.epoch, self.cursor = self.epoch + 1, 0
            self.order = self._shuffle()
        i = int(self.order[self.cursor])
        self.cursor += 1
        return i

    def restore(self, epoch: int, cursor: int) -> None:
        if not 0 <= cursor <= len(self.docs):
            raise ValueError(f"mixture state: cursor {cursor} out of range for source {self.name!r}")
        self.epoch, self.cursor = epoch, cursor
        self.order = self._shuffle()


def _open_source(data_type: str, path: str) -> tuple[Sequence[Encoded], np.ndarray]:
    """Open a source's shards and check they hold documents of its data type."""
    dataset = open_dataset(path)
    foreign = [t for t in dataset.token_counts if t != data_type and not t.startswith(data_type + "/")]
    if foreign:
        raise ValueError(f"mixture source {data_type!r}: {path} holds {foreign[0]!r} documents")
    return dataset, dataset.lengths


class Mixture:
    """An infinite iterator of `Encoded` documents mixed by token share; see the module doc."""

    def __init__(
        self,
        cfg: MixtureConfig,
        rank: int = 0,
        world_size: int = 1,
        documents: dict[str, Sequence[Encoded]] | None = None,
    ):
        """`documents` (data type -> documents in memory) replaces opening `cfg.sources`."""
        cfg.validate()
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank} of {world_size}")
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        if documents is None:
            # Every configured path is checked, even of zero-weight groups: a typo should not
            # wait to surface until the stage that uses it.
            for t, path in sorted(cfg.sources.items()):
                if not Path(path).is_dir():
                    raise FileNotFoundError(f"mixture source {t!r}: directory {path} not found")
        total = sum(cfg.ratios.values())
        self.group_targets = {g: w / total for g, w in sorted(cfg.ratios.items()) if w > 0}
        self._sources: dict[str, _Source] = {}
        self._type_targets: dict[str, dict[str, float]] = {}
        for group in self.group_targets:
            weights = {t: cfg.type_weights.get(t, 1.0) for t in sorted(cfg.sources) if group_of(t) == group}
            weights = {t: w for t, w in weights.items() if w > 0}
            group_total = sum(weights.values())
            self._type_targets[group] = {t: w / group_total for t, w in weights.items()}
            for t in weights:
                if documents is not None:
                    docs = documents[t]
                    lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
                else:
                    docs, lengths = _open_source(t, cfg.sources[t])
                if len(docs) == 0:
                    raise ValueError(f"mixture source {t!r} has no documents")
                if lengths.min() <= 0:
                    raise ValueError(f"mixture source {t!r} has an empty document")
                self._sources[t] = _Source(t, docs, lengths, cfg.seed)
        self._group_tokens = {g: 0 for g in self.group_targets}
        self._type_tokens = {t: 0 for t in self._sources}
        self._rng = random.Random(cfg.seed)
        self._step = 0  # documents drawn in the global stream, all ranks together
        log.info(
            "mixture over %s, group targets %s (rank %d of %d)",
            ", ".join(f"{t} ({len(s.docs)} docs)" for t, s in self._sources.items()),
            {g: round(s, 4) for g, s in self.group_targets.items()},
            rank,
            world_size,
        )

    @classmethod
    def from_documents(
        cls,
        docs_by_type: dict[str, Sequence[Encoded]],
        ratios: dict[str, float],
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        type_weights: dict[str, float] | None = None,
    ) -> Mixture:
        """A mixture over in-memory documents (tests, benchmarks)."""
        cfg = MixtureConfig(
            sources={t: f"<memory:{t}>" for t in docs_by_type},
            ratios=dict(ratios),
            seed=seed,
            type_weights=dict(type_weights or {}),
        )
        return cls(cfg, rank, world_size, documents=docs_by_type)

    def _most_behind(self, targets: dict[str, float], counts: dict[str, int]) -> str:
        """The name whose realised tokens are furthest below its target share."""
        total = sum(counts[n] for n in targets)
        deficits = {n: share * total - counts[n] for n, share in targets.items()}
        best = max(deficits.values())
        tied = [n for n, d in deficits.items() if d == best]
        return tied[0] if len(tied) == 1 else self._rng.choice(tied)

    def _draw(self) -> tuple[_Source, int]:
        """Advance the global stream by one document."""
        group = self._most_behind(self.group_targets, self._group_tokens)
        source = self._sources[self._most_behind(self._type_targets[group], self._type_tokens)]
        i = source.next_index()
        n = int(source.lengths[i])
        self._group_tokens[group] += n
        self._type_tokens[source.name] += n
        self._step += 1
        return source, i

    def __iter__(self) -> Iterator[Encoded]:
        return self

    def __next__(self) -> Encoded:
        while True:
            mine = self._step % self.world_size == self.rank
            source, i = self._draw()
            if mine:
                return source.docs[i]

    # ---- reporting ----

    def shares(self) -> dict[str, float]:
        """Realised token share of each data type in the global stream so far."""
        total = sum(self._type_tokens.values())
        return {t: (n / total if total else 0.0) for t, n in self._type_tokens.items()}

    def group_shares(self) -> dict[str, float]:
        """Realised token share of each group in the global stream so far."""
        total = sum(self._group_tokens.values())
        return {g: (n / total if total else 0.0) for g, n in self._group_tokens.items()}

    @property
    def tokens_seen(self) -> int:
        """Tokens drawn in the global stream (all ranks together)."""
        return sum(self._group_tokens.values())

    # ---- resuming ----

    def state_dict(self) -> dict:
        """The stream position as a plain JSON-able dict (the same on every rank)."""
        version, internal, gauss = self._rng.getstate()
        return {
            "version": STATE_VERSION,
            "seed": self.cfg.seed,
            "step": self._step,
            "sources": {t: {"epoch": s.epoch, "cursor": s.cursor, "num_docs": len(s.docs)} for t, s in self._sources.items()},
            "group_tokens": dict(self._group_tokens),
            "type_tokens": dict(self._type_tokens),
            "rng": [version, list(internal), gauss],
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`; the sources, their sizes and the seed must match."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"mixture state version {state.get('version')!r}, expected {STATE_VERSION}")
        if state["seed"] != self.cfg.seed:
            raise ValueError(f"mixture state has seed {state['seed']}, the config {self.cfg.seed}")
        if set(state["sources"]) != set(self._sources) or set(state["group_tokens"]) != set(self._group_tokens):
            raise ValueError(
                f"mixture state is for sources {sorted(state['sources'])} and groups {sorted(state['group_tokens'])}, "
                f"this mixture has {sorted(self._sources)} and {sorted(self._group_tokens)}"
            )
        for t, s in state["sources"].items():
            if s["num_docs"] != len(self._sources[t].docs):
                raise ValueError(f"mixture state: source {t!r} had {s['num_docs']} documents, now {len(self._sources[t].docs)}")
        for t, s in state["sources"].items():
            self._sources[t].restore(s["epoch"], s["cursor"])
        self._group_tokens = {g: int(n) for g, n in state["group_tokens"].items()}
        self._type_tokens = {t: int(n) for t, n in state["type_tokens"].items()}
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
        self._step = int(state["step"])
