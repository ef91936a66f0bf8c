"""Training: one stage of MIO's recipe (pre-training Stage I/II/III or SFT), start to finish.

    mio train configs/toy/stage1.toml configs/toy/stage2.toml ... [--resume]

Each config is one stage; stages given together run in order, each starting from the
previous stage's final weights. Read top to bottom: config -> setup (vocab, model, data,
optimizer) -> loop (accumulate, clip, step, log, validate, checkpoint) -> export.

The data stream is a stage `Mixture` of pre-tokenized shards, packed into rows with
document-causal attention. Losses are reported per data type and per modality of the
predicted token (the paper's Figure 2). Checkpoints hold model, optimizer, scheduler, RNG and
data position; they are written to a temporary directory and renamed into place, and a run
killed at any moment resumes (`--resume`) with the same subsequent losses.

Under `torchrun --nproc_per_node N` the model is sharded with FSDP2 (`fully_shard`) and each
rank reads a disjoint share of the mixture (gloo on CPU, nccl on GPU).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup

from mio import config as config_lib
from mio.data.mixture import Mixture, MixtureConfig
from mio.data.packing import IGNORE, Packer, PackedBatch
from mio.data.shards import open_dataset
from mio.model import ModelConfig, build_model, count_parameters, token_losses
from mio.text_tokenizer import load_text_tokenizer
from mio.vocab import Vocab, VocabLayout

log = logging.getLogger(__name__)

MODALITIES = ("text", "image", "speech")
STATE_FILE = "trainer_state.pt"
LATEST = "latest"


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
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("steps, batch_size and grad_accum must be >= 1")
        if self.context_length < 8:
            raise ValueError("context_length must be >= 8")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16, got {self.precision!r}")

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


# ---------------------------------------------------------------- distributed helpers


def _dist_setup(device_kind: str) -> tuple[int, int]:
    """Join the process group under torchrun; (rank, world_size), (0, 1) when run alone."""
    if "RANK" not in os.environ:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _resolve_device(spec: str, rank: int) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda" and "LOCAL_RANK" in os.environ:
        spec = f"cuda:{os.environ['LOCAL_RANK']}"
    return torch.device(spec)


def _shard_model(model, world_size: int) -> None:
    """FSDP2: shard each decoder layer, then the root (embeddings, norm, head)."""
    if world_size == 1:
        return
    from torch.distributed.fsdp import fully_shard

    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)


def _full_state(model, optimizer, world_size: int) -> tuple[dict, dict]:
    """Unsharded model and optimizer state (gathered to CPU; identical on every rank)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    if world_size == 1:
        return model.state_dict(), optimizer.state_dict()
    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=opts), get_optimizer_state_dict(model, optimizer, options=opts)


def _load_full_state(model, optimizer, model_state: dict, optim_state: dict, world_size: int) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

    if world_size == 1:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optim_state)
        return
    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_state, options=opts)
    set_optimizer_state_dict(model, optimizer, optim_state, options=opts)


# ---------------------------------------------------------------- the stage


class Stage:
    """Everything one stage needs, set up from its config."""

    def __init__(self, cfg: TrainConfig, resume: bool = False):
        cfg.check_paths()
        self.cfg = cfg
        self.out = Path(cfg.out_dir)
        device_kind = "cuda" if cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
        self.rank, self.world_size = _dist_setup(device_kind)
        self.device = _resolve_device(cfg.device, self.rank)
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
        else:
            self.model = build_model(cfg.model, self.vocab.size)
        self.model.to(self.device)
        _shard_model(self.model, self.world_size)

        o = cfg.optim
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay,
            fused=self.device.type == "cuda",
        )
        warmup = math.ceil(o.warmup_ratio * cfg.steps)
        self.scheduler = _cosine(self.optimizer, warmup, cfg.steps, o.min_lr_ratio)

        self.mixture = Mixture(cfg.data, rank=self.rank, world_size=self.world_size)
        opens = (self.vocab.image_start, self.vocab.speech_start)
        closes = (self.vocab.image_end, self.vocab.speech_end)
        self.packer = Packer(cfg.context_length, cfg.batch_size, self.vocab.pad_id, opens, closes, cfg.buffer_rows)
        self.step = 0
        self.history: list[dict] = []
        if resume:
            self._restore()
        self.batches = self.packer.batches(self.mixture)

    # -- checkpoints --

    def _checkpoint_dir(self) -> Path:
        return self.out / "checkpoints"

    def save_checkpoint(self) -> None:
        """Write model + trainer state to step_N.tmp, rename to step_N, then point `latest` at it."""
        model_state, optim_state = _full_state(self.model, self.optimizer, self.world_size)
        if self.rank == 0:
            root = self._checkpoint_dir()
            final = root / f"step_{self.step:07d}"
            tmp = root / f"step_{self.step:07d}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            _unwrap(self.model).save_pretrained(tmp, state_dict=model_state)
            torch.save(
                {
                    "step": self.step,
                    "optimizer": optim_state,
                    "scheduler": self.scheduler.state_dict(),
                    "rng": _rng_state(),
                    "mixture": self.mixture.state_dict(),
                    "packer": self.packer.state_dict(),
                    "history": self.history,
                },
                tmp / STATE_FILE,
            )
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            _write_atomic(root / LATEST, final.name)
            for old in sorted(p for p in root.glob("step_*") if not p.name.endswith(".tmp"))[: -self.cfg.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
            log.info("checkpoint written: %s", final)
        if self.world_size > 1:
            dist.barrier()

    def _restore(self) -> None:
        pointer = self._checkpoint_dir() / LATEST
        if not pointer.is_file():
            log.info("no checkpoint in %s; starting from the beginning", self._checkpoint_dir())
            return
        ckpt = self._checkpoint_dir() / pointer.read_text().strip()
        state = torch.load(ckpt / STATE_FILE, weights_only=True)
        from safetensors.torch import load_file

        model_state = load_file(str(ckpt / "model.safetensors"))
        if _unwrap(self.model).config.tie_word_embeddings:
            model_state.setdefault("lm_head.weight", model_state["model.embed_tokens.weight"])
        _load_full_state(self.model, self.optimizer, model_state, state["optimizer"], self.world_size)
        self.scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
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
        _write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))

    # -- training --

    def train_step(self) -> dict:
        """One optimizer step over `grad_accum` micro-batches; returns loss statistics."""
        self.model.train()
        sums = _LossSums(self.vocab)
        for micro in range(self.cfg.grad_accum):
            batch = next(self.batches).to(self.device)
            with self.autocast:
                losses = token_losses(self.model, batch)
            count = (batch.labels != IGNORE).sum().clamp(min=1)
            (losses.sum() / count / self.cfg.grad_accum).backward()
            sums.add(losses.detach(), batch)
        clip = self.cfg.optim.grad_clip
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip if clip > 0 else float("inf"))
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
        for data_type, path in sorted(self.cfg.validation.items()):
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
        model_state, _ = _full_state(self.model, self.optimizer, self.world_size)
        if self.rank == 0:
            _unwrap(self.model).save_pretrained(self.out, state_dict=model_state)
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
            _write_atomic(self.out / "run.json", json.dumps(run, indent=2))
            log.info("%s done: model written to %s", self.cfg.name, self.out)
        if self.world_size > 1:
            dist.barrier()


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
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, dict(zip(keys, zip(sums, counts))))
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


def _cosine(optimizer, warmup: int, total: int, min_ratio: float):
    """Linear warmup then cosine decay to `min_ratio` of the peak."""
    if min_ratio == 0:
        return get_cosine_schedule_with_warmup(optimizer, warmup, total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _unwrap(model):
    return getattr(model, "module", model)


def _rng_state() -> dict:
    """Every RNG a stage may touch, as plain lists (loadable with weights_only=True)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _fmt_seconds(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


# ---------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("configs", nargs="+", help="stage TOML configs, run in order")
    p.add_argument("--resume", action="store_true", help="continue each stage from its latest checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set steps=10 --set optim.lr=1e-4 (applies to every stage)")


def _parse_overrides(items: list[str]) -> dict:
    import tomllib

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = value
    return out


def run_stages(paths: list[str], resume: bool = False, overrides: dict | None = None) -> list[dict]:
    """Run stage configs in order; a stage without `init_from` starts from the previous one."""
    results, previous = [], ""
    for path in paths:
        cfg = load_config(path, overrides)
        if not cfg.init_from and previous:
            cfg.init_from = previous
        final_marker = Path(cfg.out_dir) / "run.json"
        if resume and final_marker.is_file() and json.loads(final_marker.read_text()).get("steps") == cfg.steps:
            log.info("%s already finished (%s); skipping", cfg.name, final_marker)
        else:
            results.append(Stage(cfg, resume=resume).run())
        previous = cfg.out_dir
    return results


def run(args: argparse.Namespace) -> int:
    run_stages(args.configs, resume=args.resume, overrides=_parse_overrides(args.set))
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0
