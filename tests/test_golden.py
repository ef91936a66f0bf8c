"""Golden losses: a seed-0 debug model trained for a few steps must give the stored numbers.

A refactor that changes the arithmetic of encoding, packing, the model, the loss, the
optimizer or the schedule changes these losses and fails here. To accept an intended change,
regenerate the file and say why in the commit:

    MIO_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py
"""

import json
import os
import random
from pathlib import Path

import pytest
import torch

from mio.data.encode import EncodeConfig, Sample, encode_sample
from mio.data.shards import ShardWriter
from mio.segments import Image, Speech, Text
from mio.train.loop import run_stages

GOLDEN = Path(__file__).parent / "assets" / "golden_losses.json"
WORDS = "red green blue circle square triangle left right big small the a is on of".split()
DATA_TYPES = ("image_text_pair", "language", "speech_text_pair")
STEPS = 10
# Same machine, same threads: identical. Other CPUs' kernels sum in another order (~1e-6).
RTOL = 1e-4


def _documents(vocab, data_type: str, n: int, seed: int):
    """Deterministic documents through the real sample encoder (no Python `hash`)."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg = EncodeConfig(speech_frame_rate=25.0)
    for _ in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
        if data_type == "image_text_pair":
            segments = [Image(codes=torch.randint(0, 64, (8,), generator=gen)), Text(text)]
        elif data_type == "speech_text_pair":
            segments = [Speech(codes=torch.randint(0, 32, (4, rng.randint(3, 10)), generator=gen)), Text(text)]
        else:
            segments = [Text(text + ". " + text)]
        yield encode_sample(Sample(data_type, segments), vocab, cfg, rng)


def _config(path: Path, data: Path, out: Path) -> Path:
    lines = [
        'name = "golden"', f'out_dir = "{out}"', f'text_tokenizer = "{data / "text_tokenizer"}"',
        f"steps = {STEPS}", "batch_size = 2", "context_length = 96", "buffer_rows = 4", "log_every = 1",
        "save_every = 1000", "eval_docs = 8", "seed = 0",
        "[layout]", "image_codebook_size = 64", "tokens_per_image = 8", "speech_codebook_size = 32", "speech_layers = 4",
        "[model]", "hidden_size = 48", "num_layers = 2", "num_heads = 4", "num_kv_heads = 2", "intermediate_size = 96",
        "[optim]", "lr = 3e-3", "warmup_ratio = 0.2", "grad_clip = 1.0",
        "[data]", "seed = 0", "ratios = { pair = 12, lang = 2, speech = 2 }",
        "[data.sources]", *(f'{t} = "{data / "train" / t}"' for t in DATA_TYPES),
        "[validation]", *(f'{t} = "{data / "val" / t}"' for t in DATA_TYPES),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_golden_losses(tmp_path, text_tokenizer, vocab, one_thread):
    data = tmp_path / "data"
    text_tokenizer.save_pretrained(data / "text_tokenizer")
    for split, n, seed in (("train", 60, 0), ("val", 8, 1)):
        for data_type in DATA_TYPES:
            with ShardWriter(data / split / data_type / "shard_00000", vocab.size) as writer:
                for doc in _documents(vocab, data_type, n, seed):
                    writer.append(doc)
    run_stages([str(_config(tmp_path / "golden.toml", data, tmp_path / "run"))])
    history = json.loads((tmp_path / "run" / "run.json").read_text())["metrics"]
    steps = [r for r in history if "loss" in r]
    assert len(steps) == STEPS
    got = {f"step{r['step']}/{k}": r[k] for r in steps for k in ("loss", "loss_text", "loss_image", "loss_speech") if k in r}
    got |= {k: v for r in history for k, v in r.items() if k.startswith("val_") and k != "val_tokens"}
    if os.environ.get("MIO_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1) + "\n")
    want = json.loads(GOLDEN.read_text())
    assert got == pytest.approx(want, rel=RTOL)
    # The numbers are a training run, not constants: the model learns within these steps.
    assert want[f"step{STEPS}/loss"] < want["step1/loss"] - 0.5
