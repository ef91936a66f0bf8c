"""The backbone: a transformers Llama causal LM over the unified vocabulary.

MIO is a plain decoder-only LM (Yi-6B, a Llama, in the paper); all of its multimodality is
in the vocabulary. This file builds the model from a config or a local pretrained
directory, extends the embedding and LM head with the media rows, and computes per-token
losses on packed batches with document-causal attention.

New rows are initialised by transformers' mean resizing: drawn from a normal distribution
with the mean and covariance of the existing embeddings (Hewitt, 2021), which keeps the
initial distribution over old tokens unchanged in expectation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

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
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    """`sdpa` and `eager` get an explicit 4-D document mask; `flash_attention_2` runs
    varlen kernels from the restarting position ids (GPU only)."""
    init_std: float = 0.02
    """Std of the random initialisation."""
    seed: int = 0
    """Seed of the random initialisation."""

    def validate(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be divisible by num_kv_heads")


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


def forward_logits(model, batch: PackedBatch, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Logits of a packed batch with document-causal attention: [B, L, V], or [B, K, V] at
    the K sequence positions `keep` (the LM head runs only there)."""
    extra = {} if keep is None else {"logits_to_keep": keep}
    if model.config._attn_implementation == "flash_attention_2":
        # transformers detects packed documents from restarting position ids and runs varlen kernels.
        return model(input_ids=batch.input_ids, position_ids=batch.position_ids, **extra).logits
    mask = document_mask(batch.document_ids)
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
