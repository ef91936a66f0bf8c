"""The model's forward for generation: a Llama decode step over a preallocated per-slot KV cache.

Generation runs the backbone one token at a time for many sequences. transformers' forward
does that through a `DynamicCache` that concatenates every layer's keys and values at every
step, builds a 4-D mask from the padded batch, and passes through a dozen wrappers per
layer; on a small model most of a step is that overhead, not arithmetic. `Decoder` runs the
same weights (the model's own modules: embedding, rotary embedding, norms, projections, LM
head) with its own loop:

- **Slots.** The cache is allocated once: per layer, keys and values of shape
  [slots, kv_heads, capacity, head_dim]. A sequence owns one slot; `prefill` writes its
  prompt there (many prompts in one forward), `step` appends one token to each given slot,
  `reorder` copies slots onto others (beam search). Sequences of different lengths share a
  step without padding: each slot has its own length, positions and attention mask, so a
  sequence decodes exactly as it would alone, and one may join or leave between any two
  steps (continuous batching).
- **Shared prefixes.** Every chat begins with BOS and its mode's system prompt; their keys
  and values are computed once and copied into each new slot (`SharedPrefixes`).
- **The LM head on a vocabulary subset.** `head_logits(model, hidden, spans)` computes only the columns
  in `spans` (the rest are -inf). The generation grammar knows before each step which tokens
  may come next (inside an image block only image codes; in text only text), so the head
  skips the rest of the vocabulary: a slice of the weight, not a copy.

It covers the Llama family (MIO, Yi): RMSNorm, rotary embeddings of any type transformers
implements (through the model's own `rotary_emb`), grouped-query attention, SiLU-gated MLP,
optional projection biases. `tests/test_decoder.py` holds it to transformers' forward.
`Recompute` has the same interface and recomputes whole sequences with transformers'
forward at every step: the reference, and the no-cache path.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

SUPPORTED_MODEL_TYPES = ("llama",)
"""Architectures whose layers `Decoder` runs (MIO's backbone, Yi-6B, is a Llama)."""


def check_model(model) -> None:
    """Raise ValueError unless `Decoder` can run `model`."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(f"the generation engine runs Llama-architecture models (MIO, Yi); got {model_type!r}")


def _rms_norm(x: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
    """transformers' LlamaRMSNorm, inline (the same arithmetic, without the module call)."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * h.to(x.dtype)


def head_logits(model, hidden: torch.Tensor, spans: Sequence[tuple[int, int]] | None = None) -> torch.Tensor:
    """Next-token logits [B, V] (fp32) from final hidden states [B, H]; with `spans`, only
    the columns in those [lo, hi) ranges are computed and the rest are -inf."""
    head = model.get_output_embeddings()
    if spans is None:
        return F.linear(hidden, head.weight, head.bias).float()
    out = torch.full((hidden.shape[0], head.weight.shape[0]), float("-inf"), device=hidden.device)
    for lo, hi in spans:
        out[:, lo:hi] = F.linear(hidden, head.weight[lo:hi], None if head.bias is None else head.bias[lo:hi]).float()
    return out


MIN_SHARED_PREFIX = 16
"""Prompts that begin with the same this-many tokens or more share their keys and values
(every chat begins with BOS and its mode's system prompt); a shorter match saves less than
bookkeeping costs."""
MAX_SHARED_PREFIXES = 8
"""Shared prefixes remembered (least recently used first out), and recent prompts compared."""


@dataclass
class Prefix:
    """Leading tokens shared by prompts, and their keys and values per layer ([kv, n, D] each)."""

    ids: tuple[int, ...]
    cache: list[tuple[torch.Tensor, torch.Tensor]]


class SharedPrefixes:
    """Prefix caching: the keys and values of prompt beginnings that recur. A prefix is
    remembered when a prompt shares at least MIN_SHARED_PREFIX leading tokens with a recent
    one; later prompts that begin with it copy it instead of computing it. A prefix's keys and
    values depend on its tokens alone (attention is causal and positions start at 0)."""

    def __init__(self):
        self.stored: collections.OrderedDict[tuple[int, ...], Prefix] = collections.OrderedDict()
        self.recent: collections.deque[tuple[int, ...]] = collections.deque(maxlen=MAX_SHARED_PREFIXES)
        self.reused_tokens = 0
        """Prompt tokens copied rather than computed, in all (for tests and logs)."""

    def find(self, ids: Sequence[int]) -> Prefix | None:
        """The longest remembered prefix of `ids` that leaves at least one token to compute."""
        best = None
        for key, prefix in self.stored.items():
            if len(key) < len(ids) and tuple(ids[:len(key)]) == key and (best is None or len(key) > len(best.ids)):
                best = prefix
        if best is not None:
            self.stored.move_to_end(best.ids)
            self.reused_tokens += len(best.ids)
        return best

    def remember(self, ids: Sequence[int], cache_of: Callable[[int], list[tuple[torch.Tensor, torch.Tensor]]]) -> None:
        """Note a prefilled prompt; `cache_of(n)` gives its first n positions' keys and values."""
        ids = tuple(ids)
        for other in self.recent:
            n = _common_prefix(ids, other)
            n = min(n, len(ids) - 1)  # a prompt's last token is always computed (its hidden state is needed)
            if n >= MIN_SHARED_PREFIX and ids[:n] not in self.stored:
                self.stored[ids[:n]] = Prefix(ids[:n], cache_of(n))
                if len(self.stored) > MAX_SHARED_PREFIXES:
                    self.stored.popitem(last=False)
        self.recent.append(ids)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Decoder:
    """Runs a Llama causal LM over `slots` KV-cache rows of `capacity` positions each."""

    def __init__(self, model, slots: int, capacity: int):
        check_model(model)
        config, base = model.config, model.model
        self.model, self.slots, self.capacity = model, slots, capacity
        self.embed, self.layers, self.norm, self.rotary = base.embed_tokens, base.layers, base.norm, base.rotary_emb
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        shape = (slots, config.num_key_value_heads, capacity, head_dim)
        param = next(model.parameters())
        # Zeros, not empty: a value row past a slot's length is masked out of attention, but
        # a NaN bit pattern there would still poison the weighted sum (0 * NaN).
        self.keys = [torch.zeros(shape, dtype=param.dtype, device=param.device) for _ in self.layers]
        self.values = [torch.zeros(shape, dtype=param.dtype, device=param.device) for _ in self.layers]
        self.lengths = torch.zeros(slots, dtype=torch.long, device=param.device)
        self.prefixes = SharedPrefixes()

    @property
    def device(self) -> torch.device:
        return self.lengths.device

    def length(self, slot: int) -> int:
        """Tokens cached in `slot`."""
        return int(self.lengths[slot])

    def free(self, slot: int) -> None:
        """Forget `slot`'s sequence (its rows are overwritten by the next one)."""
        self.lengths[slot] = 0

    @torch.inference_mode()
    def prefill(self, slots: Sequence[int], prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """Start a sequence in each of `slots` (empty ones) from its prompt, all in one
        forward; returns the final hidden states [B, H] of the prompts' last tokens.

        A prompt that begins with a remembered prefix (`SharedPrefixes`) gets that prefix's
        keys and values copied into its slot and computes only the rest. The rest of every
        prompt is right-padded and attends to keys up to its own position; the padding's
        keys and values land past the slot's length, where decoding masks and overwrites them."""
        if any(self.length(s) for s in slots):
            raise ValueError("prefill starts new sequences; a slot is still in use")
        if min(len(p) for p in prompts) == 0:
            raise ValueError("nothing to prefill: an empty prompt")
        if max(len(p) for p in prompts) > self.capacity:
            raise ValueError(f"{max(len(p) for p in prompts)} tokens do not fit the cache's {self.capacity} positions")
        starts = []
        for slot, ids in zip(slots, prompts):
            prefix = self.prefixes.find(ids)
            for layer, (keys, values) in enumerate(prefix.cache if prefix else ()):
                self.keys[layer][slot, :, :keys.shape[1]] = keys
                self.values[layer][slot, :, :values.shape[1]] = values
            starts.append(len(prefix.ids) if prefix else 0)
        rests = [ids[start:] for ids, start in zip(prompts, starts)]
        width = max(len(r) for r in rests)
        tokens = torch.zeros(len(prompts), width, dtype=torch.long, device=self.device)
        for row, rest in enumerate(rests):
            tokens[row, :len(rest)] = torch.tensor(list(rest), dtype=torch.long, device=self.device)
        begin = torch.tensor(starts, device=self.device)
        positions = begin[:, None] + torch.arange(width, device=self.device)
        mask = None  # every prompt starts at 0: the causal kernel
        if any(starts):
            keys = torch.arange(int(positions.max()) + 1, device=self.device)
            mask = (keys[None, None, :] <= positions[:, :, None])[:, None]
        rows = torch.tensor(list(slots), dtype=torch.long, device=self.device)
        hidden = self._forward(tokens, positions, rows, mask)
        self.lengths[rows] = torch.tensor([len(p) for p in prompts], device=self.device)
        for slot, ids in zip(slots, prompts):
            self.prefixes.remember(ids, lambda n, slot=slot: [(k[slot, :, :n].clone(), v[slot, :, :n].clone())
                                                              for k, v in zip(self.keys, self.values)])
        last = torch.tensor([len(r) - 1 for r in rests], device=self.device)
        return hidden[torch.arange(len(prompts), device=self.device), last]

    @torch.inference_mode()
    def step(self, slots: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Append one token to each of `slots` ([B] slot indices, distinct); returns the
        final hidden states [B, H] of the new tokens."""
        positions = self.lengths[slots]
        end = int(positions.max()) + 1
        if end > self.capacity:
            raise ValueError(f"a sequence of {end} tokens does not fit the cache's {self.capacity} positions")
        mask = (torch.arange(end, device=self.device)[None, :] <= positions[:, None])[:, None, None, :]
        hidden = self._forward(tokens[:, None], positions[:, None], slots, mask)
        self.lengths[slots] += 1
        return hidden[:, -1]

    @torch.inference_mode()
    def reorder(self, index: torch.Tensor) -> None:
        """Slot i takes the cache of slot index[i], for i < len(index) (beam search)."""
        n = len(index)
        for cache in (*self.keys, *self.values):
            cache[:n] = cache[index]
        self.lengths[:n] = self.lengths[index]

    def _forward(self, tokens: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor,
                 mask: torch.Tensor | None) -> torch.Tensor:
        """tokens, positions [B, T] for `slots` [B]: writes their keys and values at their
        positions, attends over each slot's cache up to the last position with `mask` (None:
        the causal kernel, for prompts that start at 0); hidden [B, T, H]."""
        b, t = tokens.shape
        end = int(positions.max()) + 1
        # Slots 0..B-1 in order (a static batch, or a full one) read the cache as views;
        # any other set is gathered.
        contiguous = int(slots[-1]) == b - 1 and bool((slots == torch.arange(b, device=slots.device)).all())
        x = self.embed(tokens)
        cos, sin = self.rotary(x, positions)
        write_rows = slots[:, None].expand(b, t)
        for layer, key_cache, value_cache in zip(self.layers, self.keys, self.values):
            attn = layer.self_attn
            h = _rms_norm(x, layer.input_layernorm)
            q = F.linear(h, attn.q_proj.weight, attn.q_proj.bias).view(b, t, -1, attn.head_dim).transpose(1, 2)
            k = F.linear(h, attn.k_proj.weight, attn.k_proj.bias).view(b, t, -1, attn.head_dim).transpose(1, 2)
            v = F.linear(h, attn.v_proj.weight, attn.v_proj.bias).view(b, t, -1, attn.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            # [B, kv, T, D] -> the cache at (slot, :, position, :)
            key_cache[write_rows, :, positions] = k.transpose(1, 2)
            value_cache[write_rows, :, positions] = v.transpose(1, 2)
            if contiguous:
                keys, values = key_cache[:b, :, :end], value_cache[:b, :, :end]
            else:
                keys, values = key_cache[slots, :, :end], value_cache[slots, :, :end]
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=mask is None,
                                                 scale=attn.scaling, enable_gqa=keys.shape[1] != q.shape[1])
            x = x + F.linear(out.transpose(1, 2).reshape(b, t, -1), attn.o_proj.weight, attn.o_proj.bias)
            mlp = layer.mlp
            h = _rms_norm(x, layer.post_attention_layernorm)
            gate = mlp.act_fn(F.linear(h, mlp.gate_proj.weight, mlp.gate_proj.bias))
            x = x + F.linear(gate * F.linear(h, mlp.up_proj.weight, mlp.up_proj.bias), mlp.down_proj.weight,
                             mlp.down_proj.bias)
        return _rms_norm(x, self.norm)


class Recompute:
    """`Decoder`'s interface without a cache: every call runs transformers' own forward over
    each slot's whole sequence (left-padded). The reference `Decoder` is tested against,
    and `GenerationRequest(use_cache=False)`."""

    def __init__(self, model, slots: int, pad_id: int):
        self.model, self.pad_id = model, pad_id
        self.sequences: list[list[int]] = [[] for _ in range(slots)]

    @property
    def device(self) -> torch.device:
        return self.model.device

    def length(self, slot: int) -> int:
        return len(self.sequences[slot])

    def free(self, slot: int) -> None:
        self.sequences[slot] = []

    @torch.inference_mode()
    def prefill(self, slots: Sequence[int], prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        for slot, ids in zip(slots, prompts):
            self.sequences[slot] = list(ids)
        return self._last_hidden(list(slots))

    @torch.inference_mode()
    def step(self, slots: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        for slot, token in zip(slots.tolist(), tokens.tolist()):
            self.sequences[slot].append(token)
        return self._last_hidden(slots.tolist())

    def reorder(self, index: torch.Tensor) -> None:
        picked = [list(self.sequences[i]) for i in index.tolist()]
        self.sequences[:len(picked)] = picked

    def _last_hidden(self, slots: list[int]) -> torch.Tensor:
        rows = [self.sequences[s] for s in slots]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[self.pad_id] * (width - len(r)) + r for r in rows], device=self.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp_min(0)
        out = self.model.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
        return out.last_hidden_state[:, -1]
