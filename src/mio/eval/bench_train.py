"""`mio bench train`: training throughput of masked packing vs pad-to-longest batching, and
the cost of document-causal attention against plain causal attention.

Both methods train the same model config (fresh, identically seeded weights, fp32, AdamW)
on the same synthetic mixed-length corpus, with the same number of optimizer steps, the
same rows per batch B and the same context cap L:

- packed: `Packer` rows of exactly L tokens, several documents per row, document-causal
  attention; documents longer than L are split into pieces (all of their tokens train).
- padded: the usual baseline, `padded_batches`: B documents per batch, one per row, padded
  to the longest of the B; documents longer than L are truncated to L (the cut tokens are
  never trained on, and are not counted as useful).

Fair batch size: the baseline gets the same B as packing because that is what the same
memory allows. A padded batch is as wide as its longest document, and the corpus has many
documents of L tokens or more (TTS speech), so the baseline's worst-case batch is B x L,
exactly the packed batch; a larger B for it would run out of the memory packing uses.

Useful tokens are the non-padding tokens a step actually processes; throughput is useful
tokens per second of training (forward with `token_losses`, mean loss over the non-ignored
tokens, backward, gradient clipping, AdamW step). Batches are built before timing, so only
training is timed; the two methods take turns step by step (so a shared machine's changing
load hits both alike), and a few warmup steps of each are run first and not timed. CPU threads
are torch's default (set OMP_NUM_THREADS to change them; on a CPU shared with other jobs,
fewer threads than cores avoids OpenMP oversubscription, which can slow small models ~10x).

Attention on the packed rows is timed three ways, each a full training step on the same
rows (these take turns with the two methods above):

- document: `mio_document` attention, SDPA's causal kernel inside each document (the
  default, and what the packed method runs);
- explicit mask: transformers' SDPA with the explicit [B, 1, L, L] document mask (the
  implementation before `mio_document`, kept as the reference);
- causal: the rows as if each were one document, so attention runs causally over the whole
  row, blind to document boundaries. Wrong for training, but it is what attention over the row
  costs without masking: the speed target. (It goes through `mio_document` with one document
  per row: a plain `is_causal` SDPA call plus the gather of the rows, a copy.)

Precision: fp32, or bf16 autocast (the default on a GPU, as the trainer does). Model FLOPs
utilisation (MFU) of the packed method is its useful tokens per second times the model's
training FLOPs per token, over the device's peak: 6 x (the parameters of every matmul,
LM head included, embedding lookup not) + 6 x layers x hidden x L for attention, counted as
causal over the whole row (document masking does less, so this is the usual upper bound).
The peak is the dense bf16 tensor-core figure of a known GPU (`PEAK_BF16_TFLOPS`) or
`--peak-tflops`; without either MFU is not reported (a CPU has no meaningful one).

The corpus (documents of random ids within the vocab; only lengths matter here) follows the
paper's Stage II batch ratio image-text pair : language : video : speech = 2 : 2 : 6 : 6,
with speech split evenly between ASR and TTS. Lengths, from MIO's layouts:

| type | tokens |
|---|---|
| image-text pair | 34 image (32 codes + 2 specials) + 10-30 caption + 12 template |
| language | 100-600 |
| video-text pair | 4-8 frames x 34 + 10-60 description + 12 template |
| speech, ASR | 2-15 s x 25-50 content tokens/s + 3 transcript tokens/s + 12 template |
| speech, TTS | 2-15 s x 50 frames/s x 4 layers + 3 transcript tokens/s + 12 template |
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from mio.data.encode import Encoded
from mio.data.packing import IGNORE, PackedBatch, Packer, padded_batches
from mio.device import resolve_device
from mio.model import ModelConfig, build_model, count_parameters, token_losses

log = logging.getLogger(__name__)

TEMPLATE_TOKENS = 12
"""BOS, EOS, media specials and template words around a pair's media and text."""
TRANSCRIPT_TOKENS_PER_SECOND = 3
"""Text tokens of a transcript per second of speech (~2.5 words/s)."""
MIX = {"image_text_pair": 2, "language": 2, "video_text_pair": 6, "asr": 3, "tts": 3}
"""Document proportions: the paper's Stage II ratio, speech split evenly into ASR and TTS."""


@dataclass
class Preset:
    """One benchmark setting: the model and the batch shape both methods share."""

    model: ModelConfig
    vocab_size: int
    context_length: int
    batch_size: int
    steps: int
    warmup_steps: int


PRESETS = {
    # 11.6M parameters (a 4096-token text BPE plus MIO's 12292 media rows); about 3 minutes
    # (four methods) on a shared 2-core CPU.
    "small": Preset(
        ModelConfig(hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=4, intermediate_size=688),
        vocab_size=4096 + 12292,
        context_length=1024,
        batch_size=4,
        steps=6,
        warmup_steps=1,
    ),
    # The demo's language model (configs/toy/stage1.toml with configs/demo/default.toml's
    # overrides) and the vocabulary `mio demo` builds: the text tokenizer's ~390 tokens of the
    # embedded world, 15 x 27 image codes and 4 x 256 speech codes. About a minute on a shared
    # 2-core CPU.
    "demo": Preset(
        ModelConfig(hidden_size=96, num_layers=4, num_heads=4, num_kv_heads=4, intermediate_size=256,
                    max_position_embeddings=2048),
        vocab_size=1817,
        context_length=768,
        batch_size=2,
        steps=20,
        warmup_steps=2,
    ),
    # For a GPU (the prepared GPU check): 0.4B parameters at the paper's context of 2800,
    # about a minute of an H100 in bf16.
    "gpu": Preset(
        ModelConfig(hidden_size=1024, num_layers=16, num_heads=16, num_kv_heads=4, intermediate_size=2816,
                    max_position_embeddings=4096),
        vocab_size=64000 + 12292,
        context_length=2800,
        batch_size=8,
        steps=10,
        warmup_steps=3,
    ),
    # Seconds on a CPU: for tests and smoke runs.
    "tiny": Preset(
        ModelConfig(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128),
        vocab_size=512,
        context_length=512,
        batch_size=4,
        steps=2,
        warmup_steps=1,
    ),
}


def document_length(kind: str, rng: random.Random) -> int:
    """Token count of one synthetic document of `kind` (a key of `MIX`)."""
    if kind == "image_text_pair":
        return 34 + rng.randint(10, 30) + TEMPLATE_TOKENS
    if kind == "language":
        return rng.randint(100, 600)
    if kind == "video_text_pair":
        return 34 * rng.randint(4, 8) + rng.randint(10, 60) + TEMPLATE_TOKENS
    seconds = rng.uniform(2.0, 15.0)
    speech = seconds * rng.uniform(25.0, 50.0) if kind == "asr" else seconds * 50.0 * 4
    return int(speech) + int(seconds * TRANSCRIPT_TOKENS_PER_SECOND) + TEMPLATE_TOKENS


def synthetic_corpus(seed: int, vocab_size: int) -> Iterator[Encoded]:
    """An endless, deterministic stream of mixed-length documents of random ids (all loss targets)."""
    rng = random.Random(seed)
    kinds, weights = list(MIX), list(MIX.values())
    while True:
        kind = rng.choices(kinds, weights)[0]
        n = document_length(kind, rng)
        ids = [rng.randrange(vocab_size) for _ in range(n)]
        data_type = "speech_text_pair" if kind in ("asr", "tts") else kind
        yield Encoded(ids, [True] * n, data_type)


@dataclass
class Measurement:
    """Timed steps of one method."""

    useful_tokens: int = 0
    pad_tokens: int = 0
    seconds: float = 0.0
    steps: int = 0

    @property
    def tokens_per_s(self) -> float:
        return self.useful_tokens / self.seconds

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / self.steps

    @property
    def pad_fraction(self) -> float:
        return self.pad_tokens / (self.useful_tokens + self.pad_tokens)


PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0,
                    "A10G": 125.0, "L4": 121.0}
"""Dense bf16 tensor-core peaks (TFLOP/s) by a name in `torch.cuda.get_device_name` (SXM parts)."""


def peak_tflops(device: torch.device) -> float | None:
    """The device's dense bf16 peak from `PEAK_BF16_TFLOPS`, or None when it is not known."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def training_flops_per_token(model, context_length: int) -> float:
    """Forward + backward FLOPs per token: 6 x matmul parameters (the embedding lookup is not
    a matmul; the LM head is) + 6 x layers x hidden x L (attention, causal over the row)."""
    cfg = model.config
    embedding = model.get_input_embeddings().weight.numel()
    matmul = sum(p.numel() for p in model.parameters() if p.dim() == 2) - embedding  # norms' vectors are not matmuls
    if cfg.tie_word_embeddings:  # the head reuses the embedding matrix
        matmul += embedding
    return 6.0 * matmul + 6.0 * cfg.num_hidden_layers * cfg.hidden_size * context_length


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(model, optimizer: torch.optim.Optimizer, batch: PackedBatch, device: torch.device,
               bf16: bool = False) -> float:
    """One optimizer step on `batch` (under bf16 autocast with `bf16`); returns its wall-clock seconds."""
    _synchronize(device)
    start = time.perf_counter()
    batch = batch.to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext():
        losses = token_losses(model, batch)
    count = (batch.labels != IGNORE).sum().clamp(min=1)
    (losses.sum() / count).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    _synchronize(device)
    return time.perf_counter() - start


@dataclass
class Method:
    """One timed method: the batches it trains on and the attention its model runs."""

    batches: list[PackedBatch]
    attn_implementation: str


def whole_rows(batch: PackedBatch) -> PackedBatch:
    """`batch` with each row made one document: attention runs causally over the whole row."""
    return dataclasses.replace(batch, document_ids=torch.zeros_like(batch.document_ids))


def measure(preset: Preset, methods: dict[str, Method], warmup_steps: int, device: torch.device,
            bf16: bool = False) -> dict[str, Measurement]:
    """Train one fresh, identically initialised model per method on its batches.

    The methods take turns step by step, so load from other jobs on a shared machine falls
    on all alike; the first `warmup_steps` steps of each are run but not timed."""
    trainers = {}
    for name, method in methods.items():
        cfg = dataclasses.replace(preset.model, attn_implementation=method.attn_implementation)
        model = build_model(cfg, preset.vocab_size).to(device).train()
        trainers[name] = (model, torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1))
    results = {name: Measurement() for name in methods}
    steps = min(len(method.batches) for method in methods.values())
    for step in range(steps):
        for name, method in methods.items():
            batch = method.batches[step]
            seconds = train_step(*trainers[name], batch, device, bf16)
            if step >= warmup_steps:
                m = results[name]
                m.useful_tokens += batch.num_tokens - batch.num_pad
                m.pad_tokens += batch.num_pad
                m.seconds += seconds
                m.steps += 1
    return results


def describe_model(preset: Preset, context_length: int, precision: str) -> tuple[str, float]:
    """A one-line description of the benchmarked model, and its training FLOPs per token."""
    cfg = preset.model
    with torch.device("meta"):  # shapes only: a GPU preset need not fit in CPU memory twice
        model = build_model(cfg, preset.vocab_size)
    params = count_parameters(model)
    text = (f"Llama {params / 1e6:.1f}M params, {cfg.num_layers} layers, hidden {cfg.hidden_size}, "
            f"{cfg.num_heads} heads, vocab {preset.vocab_size}, context {context_length}, {precision}, "
            f"{cfg.attn_implementation}")
    return text, training_flops_per_token(model, context_length)


def benchmark(preset_name: str = "small", steps: int | None = None, context_length: int | None = None,
              batch_size: int | None = None, device: str | None = None, seed: int = 0, precision: str = "auto",
              peak: float | None = None) -> dict:
    """Time masked packing against pad-to-longest on the same synthetic corpus, and document
    attention against the explicit mask and plain causal attention on the packed rows; returns
    the `mio bench train --json` record (unset sizes come from the preset). `precision`:
    auto (bf16 on a GPU, else fp32), fp32 or bf16; `peak`: the device's peak TFLOP/s for MFU
    (default: `PEAK_BF16_TFLOPS` for a known GPU in bf16)."""
    preset = PRESETS[preset_name]
    steps = steps or preset.steps
    length = context_length or preset.context_length
    batch_size = batch_size or preset.batch_size
    if steps < 1 or length < 2 or batch_size < 1:
        raise ValueError("--steps and --batch-size must be >= 1, --context-length >= 2")
    if length > preset.model.max_position_embeddings:
        raise ValueError(f"--context-length {length} exceeds the model's {preset.model.max_position_embeddings} positions")
    device = resolve_device(device or "auto")
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if peak is not None and not (peak > 0 and peak < float("inf")):
        raise ValueError(f"--peak-tflops must be a positive number, got {peak}")
    peak = peak or (peak_tflops(device) if bf16 else None)
    n = preset.warmup_steps + steps

    packer = Packer(length, batch_size, pad_id=0)
    packed_iter = packer.batches(synthetic_corpus(seed, preset.vocab_size))
    packed = [next(packed_iter) for _ in range(n)]
    corpus = synthetic_corpus(seed, preset.vocab_size)
    docs = [next(corpus) for _ in range(n * batch_size)]
    padded = list(padded_batches(docs, batch_size, length, pad_id=0))
    timed_docs = docs[preset.warmup_steps * batch_size :]
    truncated = sum(max(0, len(d) - length) for d in timed_docs) / sum(len(d) for d in timed_docs)

    model, flops_per_token = describe_model(preset, length, "bf16" if bf16 else "fp32")
    log.info(
        "%s on %s (%d CPU threads): %d timed steps (+%d warmup) per method, %d rows per batch",
        model, device, torch.get_num_threads(), steps, preset.warmup_steps, batch_size,
    )
    attention = preset.model.attn_implementation
    methods = {
        "packed": Method(packed, attention),
        "padded": Method(padded, attention),
        "explicit_mask": Method(packed, "sdpa"),
        "causal": Method([whole_rows(b) for b in packed], attention),
    }
    results = measure(preset, methods, preset.warmup_steps, device, bf16)
    p, q = results["packed"], results["padded"]
    ratio = p.tokens_per_s / q.tokens_per_s
    explicit, causal = results["explicit_mask"], results["causal"]
    document_vs_causal = p.seconds_per_step / causal.seconds_per_step

    log.info("%-13s %14s %13s %14s %9s %10s", "method", "useful tok/s", "pad fraction", "useful tokens", "seconds", "s/step")
    for name, m in results.items():
        log.info("%-13s %14.1f %13.3f %14d %9.1f %10.3f", name, m.tokens_per_s, m.pad_fraction, m.useful_tokens, m.seconds,
                 m.seconds_per_step)
    log.info("ratio packed/padded: %.2fx; the baseline truncated %.1f%% of its documents' tokens", ratio, 100 * truncated)
    log.info("packed rows, step time against plain causal attention: document attention %.2fx, explicit mask %.2fx",
             document_vs_causal, explicit.seconds_per_step / causal.seconds_per_step)
    achieved = p.tokens_per_s * flops_per_token / 1e12
    mfu = achieved / peak if peak else None
    log.info("packed: %.1f model TFLOP/s%s", achieved,
             f", MFU {100 * mfu:.1f}% of {peak:.0f} TFLOP/s" if mfu is not None else " (no peak known: MFU not reported)")

    return {
        "packed_tokens_per_s": p.tokens_per_s,
        "padded_tokens_per_s": q.tokens_per_s,
        "ratio": ratio,
        "packed_pad_fraction": p.pad_fraction,
        "padded_pad_fraction": q.pad_fraction,
        "document_attention_s_per_step": p.seconds_per_step,
        "explicit_mask_s_per_step": explicit.seconds_per_step,
        "causal_attention_s_per_step": causal.seconds_per_step,
        "document_vs_causal": document_vs_causal,
        "explicit_mask_vs_causal": explicit.seconds_per_step / causal.seconds_per_step,
        "model": model,
        "precision": "bf16" if bf16 else "fp32",
        "training_flops_per_token": flops_per_token,
        "packed_model_tflops": achieved,
        "peak_tflops": peak,
        "mfu": mfu,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cpu_threads": torch.get_num_threads(),
        "steps": steps,
        "warmup_steps": preset.warmup_steps,
        "context_length": length,
        "batch_size": batch_size,
        "padded_truncated_fraction": truncated,
        "seed": seed,
    }
