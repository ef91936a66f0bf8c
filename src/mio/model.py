"""The backbone: a transformers Llama causal LM over the unified vocabulary.

MIO is a plain decoder-only LM (Yi-6B, a Llama, in the paper); all of its multimodality is
in the vocabulary. This file builds the model from a config or a local pretrained
directory, extends the embedding and LM head with the media rows, and computes per-token
losses on packed batches with document-causal attention.

Document-causal attention on a packed row runs one of three ways, by `attn_implementation`:

- `mio_document` (the default): MIO's attention function, registered with transformers. It
  gathers each document's queries, keys and values into a batch of documents, groups them by
  length, and runs SDPA's causal kernel (no explicit mask) on each group, so attention costs
  what the documents cost, not the square of the row. Without a document layout (generation,
  or any plain transformers call) it is exactly transformers' `sdpa`.
- `sdpa` / `eager`: transformers' own, given an explicit [B, 1, L, L] mask (`document_mask`);
  on CPU the masked SDPA costs about 2x causal attention over the whole row. Kept as the
  reference the fast path is tested and benchmarked against.
- `flash_attention_2`: transformers' varlen kernels, from the restarting position ids (GPU).

The implementation is a runtime choice only: transformers does not write it into a saved
`config.json`, so a checkpoint trained with `mio_document` loads with plain transformers.

New rows are initialised by transformers' mean resizing: drawn from a normal distribution
with the mean and covariance of the existing embeddings (Hewitt, 2021), which keeps the
initial distribution over old tokens unchanged in expectation.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, AttentionMaskInterface, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from mio.data.packing import IGNORE, PackedBatch

log = logging.getLogger(__name__)


@dataclass
class ModelConfig:
    """Backbone shape (ignored when `init_from` names a pretrained directory)."""

    hidden_size: int = 256
    """Width of the residual stream."""
    num_layers: int = 4
    """Transformer blocks."""
    num_heads: int = 4
    """Attention heads."""
    num_kv_heads: int = 4
    """Key/value heads (fewer than num_heads = grouped-query attention, as in Yi)."""
    intermediate_size: int = 688
    """MLP width."""
    max_position_embeddings: int = 4096
    """Longest position the rotary embedding is set up for."""
    rope_theta: float = 10000.0
    """Rotary embedding base (Yi-6B: 5e6)."""
    tie_word_embeddings: bool = False
    """Share the input embedding with the LM head."""
    init_from: str = ""
    """Local directory of a pretrained HF causal LM (e.g. Yi-6B) to start from; empty = random init."""
    attn_implementation: Literal["mio_document", "sdpa", "eager", "flash_attention_2"] = "mio_document"
    """`mio_document` runs SDPA's causal kernel inside each document of a packed row (as fast
    as causal attention over the row, or faster; CPU or GPU); `sdpa` and `eager` get an
    explicit 4-D document mask (the slower reference); `flash_attention_2` runs varlen kernels
    from the restarting position ids (GPU only). See the module docstring."""
    init_std: float = 0.02
    """Std of the random initialisation."""
    seed: int = 0
    """Seed of the random initialisation."""

    def validate(self) -> None:
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size",
                     "max_position_embeddings"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.rope_theta <= 0 or self.init_std <= 0:
            raise ValueError(f"rope_theta and init_std must be > 0, got {self.rope_theta} and {self.init_std}")
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError("hidden_size / num_heads must be even (rotary embeddings turn pairs of channels)")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be divisible by num_kv_heads")


def loaded_shape(cfg: ModelConfig, llama: LlamaConfig) -> ModelConfig:
    """`cfg` with the backbone shape of a loaded model's `llama` config: a stage that starts
    from `init_from` records the shape it trains, not the defaults it ignored."""
    return dataclasses.replace(
        cfg, hidden_size=llama.hidden_size, num_layers=llama.num_hidden_layers, num_heads=llama.num_attention_heads,
        num_kv_heads=llama.num_key_value_heads, intermediate_size=llama.intermediate_size,
        max_position_embeddings=llama.max_position_embeddings, rope_theta=llama.rope_parameters["rope_theta"],
        tie_word_embeddings=llama.tie_word_embeddings)


def build_model(cfg: ModelConfig, vocab_size: int) -> LlamaForCausalLM:
    """A Llama LM with `vocab_size` rows: random from `cfg`, or pretrained and extended."""
    if cfg.init_from:
        if not Path(cfg.init_from).is_dir():
            raise FileNotFoundError(f"model.init_from: pretrained model directory not found: {cfg.init_from}")
        model = AutoModelForCausalLM.from_pretrained(cfg.init_from, attn_implementation=cfg.attn_implementation)
        extend_vocab(model, vocab_size)
        return model
    llama = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        rope_theta=cfg.rope_theta,
        tie_word_embeddings=cfg.tie_word_embeddings,
        initializer_range=cfg.init_std,
        attn_implementation=cfg.attn_implementation,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = LlamaForCausalLM(llama)
    return model


def extend_vocab(model, vocab_size: int) -> None:
    """Grow the embedding and LM head to `vocab_size` rows (mean resizing for new rows)."""
    old = model.get_input_embeddings().weight.shape[0]
    if vocab_size < old:
        raise ValueError(f"the tokenizer has {vocab_size} tokens but the model already has {old} rows")
    if vocab_size > old:
        model.resize_token_embeddings(vocab_size, mean_resizing=True)
        log.info("extended the vocabulary from %d to %d rows", old, vocab_size)


def document_mask(document_ids: torch.Tensor) -> torch.Tensor:
    """[B, L] document ids -> [B, 1, L, L] boolean mask, True where a query may attend.

    Causal within a document, blocked across documents. Padding (-1) attends to padding,
    so no query row is all False (which would make SDPA return NaN)."""
    length = document_ids.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=document_ids.device).tril()
    same = document_ids.unsqueeze(2) == document_ids.unsqueeze(1)
    return (same & causal).unsqueeze(1)


DOCUMENT_ATTENTION = "mio_document"
"""The name `document_attention` is registered under with transformers."""
BUCKET_RATIO = 1.25
"""A length bucket holds documents down to 1/BUCKET_RATIO of its longest, so padding wastes
at most ~1.6x a document's attention; a larger ratio means fewer SDPA calls but more waste
(1.0 to 2.0 compared: docs/LOG.md, 2026-12-03)."""
BUCKET_MIN_WIDTH = 64
"""Documents of at most this many tokens share one bucket: their attention is too cheap for
the padding to matter, and one call beats many small ones."""


@dataclass
class DocumentLayout:
    """Where the documents of a packed batch lie, grouped into buckets of similar length.

    Every token belongs to exactly one segment: a run of equal document ids within a row. A run
    of padding (id -1) is a segment too, so padding attends only to padding and stays finite.
    Bucket `i` gathers its `n` segments into an [n, width] grid of tokens; a segment shorter
    than the width is filled with its own first token, which only the fill's queries can see
    (attention is causal), and their outputs are never read."""

    cells: list[torch.Tensor]
    """Per bucket, [n, width] index of each grid cell's token in the flattened [B * L] batch."""
    slots: torch.Tensor
    """[B * L]: the index of each token's output among all buckets' grid cells, flattened
    and concatenated in bucket order."""

    @classmethod
    def from_document_ids(cls, document_ids: torch.Tensor) -> DocumentLayout:
        """The layout of a [B, L] batch of document ids (-1 = padding)."""
        ids = document_ids.cpu()  # built on the host: a few small tensors, moved once
        length = ids.shape[1]
        flat = ids.flatten()
        first = torch.ones_like(flat, dtype=torch.bool)
        first[1:] = flat[1:] != flat[:-1]
        first[::length] = True  # rows are independent even where the ids of neighbours match
        starts = first.nonzero().squeeze(1)
        lengths = torch.diff(starts, append=torch.tensor([flat.numel()]))
        buckets: list[list[int]] = []
        sizes = lengths.tolist()
        for segment in sorted(range(len(sizes)), key=lambda i: -sizes[i]):
            if buckets and sizes[buckets[-1][0]] <= max(BUCKET_RATIO * sizes[segment], BUCKET_MIN_WIDTH):
                buckets[-1].append(segment)
            else:
                buckets.append([segment])
        grids = []
        slots = torch.empty(flat.numel(), dtype=torch.long)
        base = 0
        for members in buckets:
            width = sizes[members[0]]
            start, size = starts[members], lengths[members]
            offset = torch.arange(width)
            real = offset < size[:, None]
            cells = torch.where(real, start[:, None] + offset, start[:, None])  # flat token index of each cell
            grids.append(cells)
            member, column = real.nonzero(as_tuple=True)
            slots[cells[member, column]] = base + member * width + column
            base += cells.numel()
        device = document_ids.device
        return cls([c.to(device) for c in grids], slots.to(device))


def document_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    document_layout: DocumentLayout | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention inside each document of a packed batch: transformers' attention-function
    signature (query [B, H, L, D], key/value [B, H_kv, L, D] -> output [B, L, H, D], None).

    With `document_layout` (passed down from `forward_logits`) each length bucket runs SDPA's
    causal kernel on [documents, heads, width, dim] and `attention_mask` is unused; without it
    this is transformers' `sdpa`, so generation (KV cache, padding masks) is unchanged."""
    if document_layout is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    batch, heads, length, dim = query.shape
    # Token-major [B * L, heads, D]: a bucket's tokens are gathered with `index_select`, whose
    # gradient (`index_add_`) is cheaper on a CPU than that of advanced indexing (`index_put_`).
    q, k, v = (x.transpose(1, 2).reshape(batch * length, x.shape[1], dim) for x in (query, key, value))
    outputs = []
    for cells in document_layout.cells:
        grid = cells.flatten()
        out, _ = sdpa_attention_forward(
            module, *(x.index_select(0, grid).unflatten(0, cells.shape).transpose(1, 2) for x in (q, k, v)), None,
            dropout=dropout, scaling=scaling, is_causal=True,
        )
        outputs.append(out.flatten(0, 1))  # [n * width, heads, D]
    out = torch.cat(outputs).index_select(0, document_layout.slots)
    return out.view(batch, length, heads, dim), None


# Registered once, at import: the mask function is SDPA's, so a call without a document layout
# (generation) gets exactly the masks `sdpa` would.
AttentionInterface.register(DOCUMENT_ATTENTION, document_attention)
AttentionMaskInterface.register(DOCUMENT_ATTENTION, sdpa_mask)


def forward_logits(model, batch: PackedBatch, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of a packed batch with document-causal attention: [B, L, V], or [B, K, V] at
    the K sequence positions `keep` (the LM head runs only there)."""
    extra = {} if keep is None else {"logits_to_keep": keep}
    implementation = model.config._attn_implementation
    if implementation == "flash_attention_2":
        # transformers detects packed documents from restarting position ids and runs varlen kernels.
        return model(input_ids=batch.input_ids, position_ids=batch.position_ids, **extra).logits
    if implementation == DOCUMENT_ATTENTION:
        # A training forward needs no KV cache. The layout keeps documents apart, so the mask
        # says only "no padding": with neither a cache nor a mask, transformers would build a
        # [B, 1, L, L] mask from the restarting positions (~30 ms at 2 x 2048 tokens) that this
        # path never reads.
        no_padding = torch.ones_like(batch.input_ids, dtype=torch.bool)
        layout = DocumentLayout.from_document_ids(batch.document_ids)
        return model(input_ids=batch.input_ids, position_ids=batch.position_ids, attention_mask=no_padding,
                     use_cache=False, document_layout=layout, **extra).logits
    mask = document_mask(batch.document_ids)
    if implementation == "eager":
        # eager attention adds the mask to the scores: a boolean one would add 0 or 1 and block nothing.
        mask = torch.zeros(mask.shape, dtype=model.dtype, device=mask.device).masked_fill(~mask, torch.finfo(model.dtype).min)
    return model(input_ids=batch.input_ids, position_ids=batch.position_ids, attention_mask=mask, **extra).logits


def token_losses(model, batch: PackedBatch) -> torch.Tensor:
    """Per-token cross-entropy [B, L] (0 where the label is ignored), in fp32.

    The LM head and the softmax run only at positions where some row has a label: under
    SFT's assistant-only loss most positions have none (the saving: docs/LOG.md, 2026-12-02),
    and at paper scale that also spares the [B, L, 76k] logits' memory."""
    target = batch.labels != IGNORE
    keep = target.any(dim=0).nonzero().squeeze(1)
    if len(keep) == 0:
        keep = keep.new_zeros(1)  # a batch without labels still gives a graph to call backward on
    logits = forward_logits(model, batch, keep)
    labels = batch.labels[:, keep]
    kept = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE, reduction="none")
    losses = torch.zeros(batch.labels.shape, dtype=kept.dtype, device=kept.device)
    losses[:, keep] = kept.view_as(labels)
    return losses


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
