"""`mio bench generate`: generation throughput of the engine vs transformers' `generate`.

Both decode greedily with the same random-weight model (built in memory with
`mio.model.build_model`; fp32), from the same left-padded prompts, for the same number of
new tokens (no stop token, so every row generates exactly `new_tokens`), at batch sizes 1
and 8. Throughput is generated tokens per second (rows x new tokens / seconds), the best of
`repeats` timed runs after one untimed warmup run, the measurements taking turns (the best
run is the least disturbed by other work on a shared machine).

- `engine_tokens_per_s`: `mio.generate` with the modality state machine on (all output
  modalities allowed, so its masks and bookkeeping run every step): MIO's decode loop over a
  preallocated per-slot KV cache (`mio.decoder`).
- `hf_generate_tokens_per_s`: `model.generate(do_sample=False, num_beams=1)`.
- `constraint_overhead`: at batch 8, seconds with the state machine / seconds without it
  - 1; a fraction (0.05 = the constraint costs 5%). Negative when the constraint saves
  time: the LM head then computes only the columns the grammar allows.

The vocabulary is a small BPE plus the media rows of the preset's layout (the paper's
12292 for `small`), so the LM head and the masks have realistic widths.

On a CPU shared with other jobs, pass `--threads 1`: with more threads than free cores,
OpenMP oversubscription makes every small op (the masks included) wait for descheduled
threads, and the numbers measure the machine's load rather than the code.

    mio bench generate --threads 1 --json bench_generate.json
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from mio.generate import DecodingConfig, GenerationRequest, generate
from mio.model import ModelConfig, build_model, count_parameters
from mio.tokenizers.text import build_text_tokenizer
from mio.vocab import Vocab, VocabLayout

log = logging.getLogger(__name__)

BATCH_SIZES = {"batch1": 1, "batch8": 8}
WORDS = "a the red green blue small big circle square star left right of on is and image speech video".split()


@dataclass
class Preset:
    """One benchmark setting."""

    model: ModelConfig
    layout: VocabLayout
    text_vocab_size: int
    prompt_lengths: tuple[int, int]
    new_tokens: int
    repeats: int


PRESETS = {
    # ~11M parameters, 12.8k-row vocabulary (512 text + the paper's 12292 media rows).
    "small": Preset(ModelConfig(hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=4, intermediate_size=688),
                    VocabLayout(), text_vocab_size=512, prompt_lengths=(32, 96), new_tokens=64, repeats=3),
    # Seconds on a CPU: for tests and smoke runs.
    "tiny": Preset(ModelConfig(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=64),
                   VocabLayout(image_codebook_size=64, tokens_per_image=8, speech_codebook_size=32),
                   text_vocab_size=300, prompt_lengths=(4, 12), new_tokens=6, repeats=1),
}


@dataclass
class Setup:
    """A model, its vocabulary and eight prompts, shared by every measurement."""

    model: torch.nn.Module
    vocab: Vocab
    prompts: list[list[int]]
    new_tokens: int
    repeats: int


def build(preset: Preset, device: torch.device | str = "cpu", seed: int = 0) -> Setup:
    """Build the tokenizer, a random model and prompts of random text ids."""
    rng = random.Random(seed)
    corpus = [" ".join(rng.choices(WORDS, k=12)) for _ in range(200)]
    tokenizer = build_text_tokenizer(corpus, preset.text_vocab_size, preset.layout)
    vocab = Vocab(tokenizer, preset.layout)
    model = build_model(preset.model, len(tokenizer)).to(device).eval()
    model.generation_config.eos_token_id = None  # both sides generate exactly new_tokens
    model.generation_config.pad_token_id = vocab.pad_id
    text_ids = range(vocab.image_start)  # ids below the media tokens are text
    prompts = [[vocab.bos_id] + rng.choices(text_ids, k=rng.randint(*preset.prompt_lengths))
               for _ in range(max(BATCH_SIZES.values()))]
    return Setup(model, vocab, prompts, preset.new_tokens, preset.repeats)


def engine_tokens(setup: Setup, batch_size: int, constrain: bool = True) -> torch.Tensor:
    """Greedy new tokens [batch_size, new_tokens] from the engine."""
    request = GenerationRequest(prompts=setup.prompts[:batch_size],
                                decoding=DecodingConfig.greedy(max_new_tokens=setup.new_tokens),
                                stop_ids=(), seed=0, constrain=constrain)
    return torch.tensor(generate(setup.model, setup.vocab, request))


@torch.inference_mode()
def hf_tokens(setup: Setup, batch_size: int) -> torch.Tensor:
    """Greedy new tokens [batch_size, new_tokens] from `model.generate` (left padding)."""
    prompts = setup.prompts[:batch_size]
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[setup.vocab.pad_id] * (width - len(p)) + p for p in prompts], device=setup.model.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=setup.model.device)
    out = setup.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=setup.new_tokens,
                               do_sample=False, num_beams=1)
    return out[:, width:].cpu()


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure(setup: Setup) -> dict:
    """All throughputs and the constraint overhead, as the contract's JSON object.

    Every measurement runs once untimed, then the measurements take turns `repeats` times,
    so load from other work on the machine hits them alike; each keeps its best time."""
    device = setup.model.device
    runs: dict[tuple[str, str], Callable[[], object]] = {}
    for key, b in BATCH_SIZES.items():
        runs["engine", key] = lambda b=b: engine_tokens(setup, b)
        runs["hf", key] = lambda b=b: hf_tokens(setup, b)
    runs["unconstrained", "batch8"] = lambda: engine_tokens(setup, BATCH_SIZES["batch8"], constrain=False)
    for fn in runs.values():
        fn()
    best = {name: float("inf") for name in runs}
    for _ in range(setup.repeats):
        for name, fn in runs.items():
            best[name] = min(best[name], _timed(fn, device))
    tokens = {key: b * setup.new_tokens for key, b in BATCH_SIZES.items()}
    result: dict = {
        "engine_tokens_per_s": {key: tokens[key] / best["engine", key] for key in BATCH_SIZES},
        "hf_generate_tokens_per_s": {key: tokens[key] / best["hf", key] for key in BATCH_SIZES},
        "constraint_overhead": best["engine", "batch8"] / best["unconstrained", "batch8"] - 1.0,
    }
    config = setup.model.config
    result["model"] = (f"random Llama, {count_parameters(setup.model) / 1e6:.1f}M params, hidden {config.hidden_size}, "
                       f"{config.num_hidden_layers} layers, vocab {config.vocab_size}, fp32; prompts "
                       f"{min(map(len, setup.prompts))}-{max(map(len, setup.prompts))} tokens, "
                       f"{setup.new_tokens} new tokens, greedy")
    result["device"] = str(device) + (f" ({torch.get_num_threads()} threads)" if device.type == "cpu" else "")
    return result
