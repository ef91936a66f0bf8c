"""Training checkpoints: written atomically, found through a `latest` pointer, pruned safely.

A checkpoint is a directory `step_NNNNNNN/` holding the HF model (`save_pretrained`,
safetensors) and `trainer_state.pt` (optimizer, scheduler, every RNG, data position, loss
history) saved as plain tensors and lists, so it loads with `torch.load(weights_only=True)`.
It is written to `step_N.tmp` and renamed into place, and `latest` is rewritten after that,
so a run killed at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

STATE_FILE = "trainer_state.pt"
LATEST = "latest"
RUN_FILE = "run.json"


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save(root: Path, step: int, model, model_state: dict, trainer_state: dict, keep: int) -> Path:
    """Write checkpoint `step` under `root`, point `latest` at it, keep the newest `keep`."""
    final = root / f"step_{step:07d}"
    tmp = root / f"step_{step:07d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, state_dict=model_state)
    torch.save(trainer_state, tmp / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    write_atomic(root / LATEST, final.name)
    for old in sorted(p for p in root.glob("step_*") if not p.name.endswith(".tmp"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(root: Path) -> Path | None:
    """The checkpoint `latest` names, or None when there is none."""
    pointer = root / LATEST
    return root / pointer.read_text().strip() if pointer.is_file() else None


def load(checkpoint: Path, tie_word_embeddings: bool) -> tuple[dict, dict]:
    """(model state, trainer state) of a checkpoint directory."""
    from safetensors.torch import load_file

    trainer_state = torch.load(checkpoint / STATE_FILE, weights_only=True)
    model_state = load_file(str(checkpoint / "model.safetensors"))
    if tie_word_embeddings:
        model_state.setdefault("lm_head.weight", model_state["model.embed_tokens.weight"])
    return model_state, trainer_state


def check_shapes(checkpoint: Path, saved: dict, model: dict) -> None:
    """Refuse to resume into a model of another shape (a changed [model] or tokenizer), naming
    the first tensor that differs; shapes of DTensors are their full shapes."""
    missing, extra = sorted(model.keys() - saved.keys()), sorted(saved.keys() - model.keys())
    if missing or extra:
        raise ValueError(f"checkpoint {checkpoint} does not fit this stage's model: "
                         f"{len(missing)} tensors missing (first {missing[:1]}), {len(extra)} unexpected (first {extra[:1]}); "
                         "resume with the config it was written with, or start a new out_dir")
    for name, tensor in model.items():
        if tuple(saved[name].shape) != tuple(tensor.shape):
            raise ValueError(f"checkpoint {checkpoint} does not fit this stage's model: {name} is "
                             f"{list(saved[name].shape)} there, {list(tensor.shape)} here; "
                             "resume with the config it was written with, or start a new out_dir")


def rng_state() -> dict:
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


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` saved."""
    torch.set_rng_state(state["torch"])
    keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
