"""Training: one stage of MIO's recipe (pre-training Stage I/II/III or SFT), start to finish.

    mio train configs/toy/stage1.toml configs/toy/stage2.toml ... [--resume]   (see `mio.cli.train`)

Each config is one stage; stages given together run in order, each starting from the
previous stage's final weights. Read top to bottom: config -> setup (vocab, model, data,
optimizer) -> loop (accumulate, clip, step, log, validate, checkpoint) -> export.

The data stream is a stage `Mixture` of pre-tokenized shards, packed into rows with
document-causal attention. Losses are reported per data type and per modality of the
predicted token (the paper's Figure 2). Checkpoints hold model, optimizer, scheduler, RNG and
data position; they are written to a temporary directory and renamed into place, and a run
killed at any moment resumes (`--resume`) with the same subsequent losses (`checkpoint.py`).

Under `torchrun --nproc_per_node N` the model is sharded with FSDP2 and each rank reads a
disjoint share of the mixture (`distributed.py`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from mio import config as config_lib
from mio.data.mixture import Mixture, MixtureConfig
from mio.data.packing import IGNORE, PackedBatch, Packer
from mio.data.shards import open_dataset
from mio.model import ModelConfig, build_model, count_parameters, loaded_shape, token_losses
from mio.tokenizers.text import load_text_tokenizer
from mio.train import checkpoint, distributed
from mio.train.schedule import cosine_schedule
from mio.vocab import Vocab, VocabLayout

log = logging.getLogger(__name__)

MODALITIES = ("text", "image", "speech")


class TrainingDiverged(ValueError):
    """The loss or its gradient became NaN or infinite; the run stopped before updating. (A
    ValueError: its cause is a setting or the data, and commands report it in one line.)"""


@dataclass
class OptimConfig:
    """AdamW with a cosine schedule (paper: peak 3e-5, warmup ratio 0.03, clip 1.0)."""

    lr: float = 3e-5
    """Peak learning rate."""
    min_lr_ratio: float = 0.0
    """Floor of the cosine as a fraction of the peak (0 = decay to zero)."""
    warmup_ratio: float = 0.03
    """Fraction of steps spent warming up linearly."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 = off)."""

    def validate(self) -> None:
        if self.lr <= 0 or not 0 <= self.warmup_ratio < 1 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("need lr > 0, 0 <= warmup_ratio < 1 and 0 <= min_lr_ratio <= 1")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"beta1 and beta2 must be in [0, 1), got {self.beta1} and {self.beta2}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError(f"weight_decay and grad_clip must be >= 0, got {self.weight_decay} and {self.grad_clip}")


@dataclass
class TrainConfig:
    """One training stage."""

    name: str
    """Stage name (e.g. stage1, sft), used in logs and reports."""
    out_dir: str
    """Run directory: checkpoints, final model, run.json, metrics.jsonl."""
    text_tokenizer: str
    """Directory of the text tokenizer with the media tokens (written by `mio prepare`)."""
    data: MixtureConfig
    """Training sources by data type and the stage's batch ratios."""
    layout: VocabLayout = field(default_factory=VocabLayout)
    """Media part of the vocabulary (paper: 8192 image codes, 4 x 1024 speech codes)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Backbone; ignored when the stage starts from `init_from`."""
    init_from: str = ""
    """Run directory of the previous stage to start from (empty: a new model)."""
    image_tokenizer: str = ""
    """Image tokenizer directory, copied into the run so it is self-contained."""
    speech_tokenizer: str = ""
    """Speech tokenizer directory, copied into the run."""
    validation: dict[str, str] = field(default_factory=dict)
    """Held-out shards by data type, scored every `eval_every` steps."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and schedule."""
    steps: int = 100
    """Optimizer steps."""
    batch_size: int = 4
    """Packed rows per micro-batch (per rank)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    context_length: int = 2800
    """Tokens per packed row (paper: 2800)."""
    buffer_rows: int = 32
    """Rows of documents gathered per packing round."""
    log_every: int = 10
    """Steps between log lines and metrics.jsonl records."""
    eval_every: int = 0
    """Steps between validations (0 = only at the end)."""
    eval_docs: int = 64
    """Documents per data type used for validation."""
    save_every: int = 50
    """Steps between checkpoints."""
    keep_checkpoints: int = 2
    """How many step checkpoints to keep."""
    seed: int = 0
    """Seed for everything the stage randomises."""
    device: str = "auto"
    """`auto` (cuda if available, else cpu), `cpu`, `cuda`, `cuda:1`..."""
    precision: str = "auto"
    """`auto` (bf16 autocast on GPU, fp32 on CPU), `fp32` or `bf16`."""

    def validate(self) -> None:
        for name in ("steps", "batch_size", "grad_accum", "buffer_rows", "log_every", "eval_docs", "save_every",
                     "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0 (0 = only at the end), got {self.eval_every}")
        if self.context_length < 8:
            raise ValueError("context_length must be >= 8")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")
        self.optim.validate()
        self.model.validate()

    def check_paths(self) -> None:
        """Every path the stage reads must exist (checked when it starts, not when parsed,
        so presets that name data not yet prepared still parse)."""
        for path_key in ("text_tokenizer", "init_from", "image_tokenizer", "speech_tokenizer"):
            path = getattr(self, path_key)
            if path and not Path(path).exists():
                raise ValueError(f"{path_key}: path not found: {path}")


def load_config(path: str | Path, overrides: dict | None = None) -> TrainConfig:
    """Read a stage config from TOML (relative paths are relative to the working directory)."""
    return config_lib.load(TrainConfig, path, overrides)


# ---------------------------------------------------------------- the stage


class Stage:
    """Everything one stage needs, set up from its config."""

    def __init__(self, cfg: TrainConfig, resume: bool = False):
        cfg.validate()
        cfg.check_paths()
        self.cfg = cfg
        self.out = Path(cfg.out_dir)
        self.rank, self.world_size, self.device = distributed.setup(cfg.device)
        use_bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda")
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if use_bf16 else nullcontext()

        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)

        self.tokenizer = load_text_tokenizer(cfg.text_tokenizer)
        self.vocab = Vocab(self.tokenizer, cfg.layout)
        if cfg.init_from:
            self.model = AutoModelForCausalLM.from_pretrained(cfg.init_from, attn_implementation=cfg.model.attn_implementation)
            if self.model.get_input_embeddings().weight.shape[0] != self.vocab.size:
                raise ValueError(f"{cfg.init_from} has a different vocabulary size than {cfg.text_tokenizer}")
            cfg.model = loaded_shape(cfg.model, self.model.config)
        else:
            self.model = build_model(cfg.model, self.vocab.size)
        self.model.to(self.device)
        distributed.shard_model(self.model, self.world_size)

        o = cfg.optim
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay,
            fused=self.device.type == "cuda",
        )
        warmup = math.ceil(o.warmup_ratio * cfg.steps)
        self.scheduler = cosine_schedule(self.optimizer, warmup, cfg.steps, o.min_lr_ratio)

        self._check_shards()
        self.mixture = Mixture(cfg.data, rank=self.rank, world_size=self.world_size)
        opens = (self.vocab.image_start, self.vocab.speech_start)
        closes = (self.vocab.image_end, self.vocab.speech_end)
        self.packer = Packer(cfg.context_length, cfg.batch_size, self.vocab.pad_id, opens, closes, cfg.buffer_rows)
        self.step = 0
        self.history: list[dict] = []
        if resume:
            self._restore()
        self.batches = self.packer.batches(self.mixture)

    def _check_shards(self) -> None:
        """Every shard must be written with this stage's vocabulary: ids of another tokenizer
        would train the wrong rows (or index past the embedding)."""
        layout = dataclasses.asdict(self.cfg.layout)
        for name, path in [*self.cfg.data.sources.items(), *self.cfg.validation.items()]:
            dataset = open_dataset(path)
            other = dataset.vocab_sizes - {self.vocab.size}
            if other:
                raise ValueError(f"{name} shards at {path} were written for a vocabulary of {min(other)} tokens; "
                                 f"{self.cfg.text_tokenizer} has {self.vocab.size}: prepare them with this tokenizer")
            for written in dataset.layouts:
                differs = {k: (written[k], v) for k, v in layout.items() if k in written and written[k] != v}
                if differs:
                    key, (was, now) = next(iter(differs.items()))
                    raise ValueError(f"{name} shards at {path} were written for layout {key} = {was}; "
                                     f"this stage's [layout] says {now}")

    # -- checkpoints --

    def _checkpoint_dir(self) -> Path:
        return self.out / "checkpoints"

    def save_checkpoint(self) -> None:
        """Write model + trainer state as checkpoint `step`, atomically (see `checkpoint.save`)."""
        model_state, optim_state = distributed.full_state(self.model, self.optimizer, self.world_size)
        if self.rank == 0:
            state = {
                "step": self.step,
                "optimizer": optim_state,
                "scheduler": self.scheduler.state_dict(),
                "rng": checkpoint.rng_state(),
                "mixture": self.mixture.state_dict(),
                "packer": self.packer.state_dict(),
                "history": self.history,
            }
            path = checkpoint.save(self._checkpoint_dir(), self.step, distributed.unwrap(self.model), model_state, state,
                                   self.cfg.keep_checkpoints)
            log.info("checkpoint written: %s", path)
        distributed.barrier(self.world_size)

    def _restore(self) -> None:
        ckpt = checkpoint.latest(self._checkpoint_dir())
        if ckpt is None:
            log.info("no checkpoint in %s; starting from the beginning", self._checkpoint_dir())
            return
        model_state, state = checkpoint.load(ckpt, distributed.unwrap(self.model).config.tie_word_embeddings)
        checkpoint.check_shapes(ckpt, model_state, distributed.unwrap(self.model).state_dict())
        distributed.load_full_state(self.model, self.optimizer, model_state, state["optimizer"], self.world_size)
        self.scheduler.load_state_dict(state["scheduler"])
        checkpoint.set_rng_state(state["rng"])
        self.mixture.load_state_dict(state["mixture"])
        self.packer.load_state_dict(state["packer"])
        self.step = state["step"]
        self.history = state["history"]
        self._truncate_metrics()
        log.info("resumed %s from %s at step %d", self.cfg.name, ckpt, self.step)

    def _truncate_metrics(self) -> None:
        """Drop metrics.jsonl records logged after the checkpoint: they will be logged again."""
        path = self.out / "metrics.jsonl"
        if self.rank != 0 or not path.is_file():
            return
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        kept = [r for r in records if r.get("stage") != self.cfg.name or r.get("step", 0) <= self.step]
        checkpoint.write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))

    # -- training --

    def train_step(self) -> dict:
        """One optimizer step over `grad_accum` micro-batches; returns loss statistics."""
        self.model.train()
        sums = _LossSums(self.vocab)
        for _ in range(self.cfg.grad_accum):
            batch = next(self.batches).to(self.device)
            with self.autocast:
                losses = token_losses(self.model, batch)
            count = (batch.labels != IGNORE).sum().clamp(min=1)
            (losses.sum() / count / self.cfg.grad_accum).backward()
            sums.add(losses.detach(), batch)
        clip = self.cfg.optim.grad_clip
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else float("inf"))
        if not math.isfinite(float(grad_norm)):  # one such step would make every weight NaN
            raise TrainingDiverged(
                f"{self.cfg.name} step {self.step + 1}: the loss or its gradient is not finite "
                f"(loss {sums.summary().get('loss', float('nan')):.4g}, gradient norm {float(grad_norm)}); stopped "
                f"before the update. The last checkpoint in {self._checkpoint_dir()} is intact; lower optim.lr "
                "or check the data")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        stats = sums.summary()
        stats.update(step=self.step, lr=self.scheduler.get_last_lr()[0], grad_norm=float(grad_norm))
        return stats

    @torch.no_grad()
    def validate(self) -> dict:
        """Mean loss per data type (and overall) on the validation shards."""
        if not self.cfg.validation:
            return {}
        self.model.eval()
        sums = _LossSums(self.vocab)
        for _, path in sorted(self.cfg.validation.items()):
            dataset = open_dataset(path)
            docs = (dataset[i] for i in range(self.rank, min(len(dataset), self.cfg.eval_docs), self.world_size))
            packer = Packer(self.cfg.context_length, self.cfg.batch_size, self.vocab.pad_id, buffer_rows=self.cfg.buffer_rows)
            for batch in packer.batches(iter(docs)):
                batch = batch.to(self.device)
                with self.autocast:
                    sums.add(token_losses(self.model, batch), batch)
        return {f"val_{k}": v for k, v in sums.summary(all_reduce=self.world_size > 1).items()}

    def run(self) -> dict:
        """Train to `steps`, logging, validating and checkpointing; export the final model."""
        cfg = self.cfg
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            log.info(
                "%s: %s parameters, %d steps x %d rows x %d tokens x %d accum x %d ranks on %s",
                cfg.name, f"{count_parameters(self.model):,}", cfg.steps, cfg.batch_size, cfg.context_length,
                cfg.grad_accum, self.world_size, self.device,
            )
        started, start_step = time.perf_counter(), self.step
        window = _LossWindow()
        while self.step < cfg.steps:
            window.add(self.train_step())
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                record = window.flush()
                elapsed = time.perf_counter() - started
                per_step = elapsed / (self.step - start_step)
                record.update(
                    tokens_per_s=record.pop("tokens") * self.world_size / max(1e-9, record.pop("seconds")),
                    eta_s=per_step * (cfg.steps - self.step),
                )
                if cfg.eval_every and self.step % cfg.eval_every == 0:
                    record.update(self.validate())
                self._log(record)
            if self.step % cfg.save_every == 0 and self.step < cfg.steps:
                self.save_checkpoint()
        final = self.validate()
        if final:
            self._log({"step": self.step, **final})
        self.export()
        return self.history[-1] if self.history else {}

    def _log(self, record: dict) -> None:
        self.history.append(record)
        if self.rank != 0:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"stage": self.cfg.name, **record}) + "\n")
        if "loss" in record:
            log.info(
                "%s step %d/%d  loss %.4f  %s  lr %.2e  %.0f tok/s  ETA %s",
                self.cfg.name, record["step"], self.cfg.steps, record["loss"],
                " ".join(f"{m} {record[f'loss_{m}']:.3f}" for m in MODALITIES if f"loss_{m}" in record),
                record["lr"], record["tokens_per_s"], _fmt_seconds(record["eta_s"]),
            )
        else:
            log.info("%s step %d validation: %s", self.cfg.name, record["step"],
                     "  ".join(f"{k} {v:.4f}" for k, v in record.items() if k.startswith("val_") and k != "val_tokens"))

    def export(self) -> None:
        """The run directory as a loadable model: HF weights, tokenizers, run.json."""
        model_state, _ = distributed.full_state(self.model, self.optimizer, self.world_size)
        if self.rank == 0:
            distributed.unwrap(self.model).save_pretrained(self.out, state_dict=model_state)
            self.tokenizer.save_pretrained(self.out)
            for key, sub in (("image_tokenizer", "image_tokenizer"), ("speech_tokenizer", "speech_tokenizer")):
                src = getattr(self.cfg, key)
                if src and Path(src).resolve() != (self.out / sub).resolve():
                    shutil.copytree(src, self.out / sub, dirs_exist_ok=True)
            run = {
                "stage": self.cfg.name,
                "config": config_lib.to_dict(self.cfg),
                "steps": self.step,
                "metrics": self.history,
                "data_shares": self.mixture.shares(),
                "packing": {"pad_fraction": self.packer.stats.pad_fraction, "split": self.packer.stats.split,
                            "dropped": self.packer.stats.dropped},
            }
            checkpoint.write_atomic(self.out / checkpoint.RUN_FILE, json.dumps(run, indent=2))
            log.info("%s done: model written to %s", self.cfg.name, self.out)
        distributed.barrier(self.world_size)


# ---------------------------------------------------------------- loss bookkeeping


class _LossSums:
    """Sums of per-token losses by data type and by modality of the predicted token."""

    def __init__(self, vocab: Vocab):
        self.vocab = vocab
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.tokens = 0

    def _add(self, key: str, total: torch.Tensor, count: torch.Tensor) -> None:
        self.sums[key] = self.sums.get(key, 0.0) + float(total)
        self.counts[key] = self.counts.get(key, 0) + int(count)

    def add(self, losses: torch.Tensor, batch: PackedBatch) -> None:
        target = batch.labels != IGNORE
        losses = losses.float()
        self._add("loss", losses[target].sum(), target.sum())
        self.tokens += int((batch.document_ids >= 0).sum())
        modality = self.vocab.modality_of(batch.labels.clamp(min=0))
        for m, name in enumerate(MODALITIES):
            sel = target & (modality == m)
            if sel.any():
                self._add(f"loss_{name}", losses[sel].sum(), sel.sum())
        for t, name in enumerate(batch.data_types):
            sel = target & (batch.data_type_ids == t)
            if sel.any():
                self._add(f"loss/{name}", losses[sel].sum(), sel.sum())

    def summary(self, all_reduce: bool = False) -> dict:
        keys = sorted(self.sums)
        sums, counts = [self.sums[k] for k in keys], [self.counts[k] for k in keys]
        if all_reduce:
            gathered = distributed.all_gather_objects(dict(zip(keys, zip(sums, counts))))
            merged: dict[str, list] = {}
            for part in gathered:
                for k, (s, c) in part.items():
                    acc = merged.setdefault(k, [0.0, 0])
                    acc[0] += s
                    acc[1] += c
            return {k: s / max(1, c) for k, (s, c) in merged.items()}
        return {k: s / max(1, c) for k, s, c in zip(keys, sums, counts)} | {"tokens": self.tokens}


class _LossWindow:
    """Averages step statistics between log lines."""

    def __init__(self):
        self.records: list[dict] = []
        self.started = time.perf_counter()

    def add(self, record: dict) -> None:
        self.records.append(record)

    def flush(self) -> dict:
        keys = {k for r in self.records for k in r if k not in ("step", "lr", "tokens")}
        out = {k: float(np.mean([r[k] for r in self.records if k in r])) for k in keys}
        out.update(step=self.records[-1]["step"], lr=self.records[-1]["lr"],
                   tokens=sum(r["tokens"] for r in self.records), seconds=time.perf_counter() - self.started)
        self.records, self.started = [], time.perf_counter()
        return out


# ---------------------------------------------------------------- small utilities


def _fmt_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def run_stages(paths: list[str], resume: bool = False, overrides: dict | None = None) -> list[dict]:
    """Run stage configs in order; a stage without `init_from` starts from the previous one."""
    results, previous = [], ""
    for path in paths:
        cfg = load_config(path, overrides)
        if not cfg.init_from and previous:
            cfg.init_from = previous
        final_marker = Path(cfg.out_dir) / checkpoint.RUN_FILE
        if resume and final_marker.is_file() and json.loads(final_marker.read_text()).get("steps") == cfg.steps:
            log.info("%s already finished (%s); skipping", cfg.name, final_marker)
        else:
            results.append(Stage(cfg, resume=resume).run())
        previous = cfg.out_dir
    return results
