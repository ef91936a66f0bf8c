"""The released MIO-7B directory layout, and its conversion to safetensors (`mio convert`).

A released MIO-7B-Base / MIO-7B-Instruct directory holds:

    config.json, generation_config.json        Llama config (+ image_bos_id, image_eos_id, ...)
    pytorch_model-0000N-of-0000M.bin (+ .index.json)   the LM, pickled state_dicts
    tokenizer.model, tokenizer_config.json, special_tokens_map.json   sentencepiece + added tokens
    seed-tokenizer-2/    seed_quantizer.pt, eva_vit_g.pth (SEED-Tokenizer-2)
    stable-diffusion-2-1-unclip/   a diffusers folder (the image decoder)
    SpeechTokenizer/     config.json, SpeechTokenizer.pt

Every pickled file is read with `torch.load(weights_only=True)`, which refuses anything but
tensors and plain containers. `convert` writes the same layout with every weight file as
safetensors, one shard at a time (a 7B model never has to fit in memory at once); the
loaders prefer the safetensors files when both are present.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from safetensors.torch import save_file

from mio.tokenizers.base import read_state_dict

log = logging.getLogger(__name__)

IMAGE_TOKENIZER_DIR = "seed-tokenizer-2"
IMAGE_DECODER_DIR = "stable-diffusion-2-1-unclip"
SPEECH_TOKENIZER_DIR = "SpeechTokenizer"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")
# A pickled file -> the safetensors name its loader looks for.
SAFETENSORS_NAMES = {
    "pytorch_model.bin": "model.safetensors",
    "diffusion_pytorch_model.bin": "diffusion_pytorch_model.safetensors",
    "SpeechTokenizer.pt": "SpeechTokenizer.safetensors",
    "seed_quantizer.pt": "seed_quantizer.safetensors",
    "eva_vit_g.pth": "eva_vit_g.safetensors",
}
INDEX_NAMES = {"pytorch_model.bin.index.json": "model.safetensors.index.json",
               "diffusion_pytorch_model.bin.index.json": "diffusion_pytorch_model.safetensors.index.json"}


def is_released_dir(path: str | Path) -> bool:
    """Whether `path` has the released MIO-7B layout (pickled LM shards or a SEED tokenizer)."""
    path = Path(path)
    return (path / IMAGE_TOKENIZER_DIR).is_dir() or any(path.glob("pytorch_model*.bin"))


def _safetensors_name(name: str) -> str:
    if name in SAFETENSORS_NAMES:
        return SAFETENSORS_NAMES[name]
    if name.startswith("pytorch_model-") and name.endswith(".bin"):  # a shard of the LM
        return "model-" + name.removeprefix("pytorch_model-").removesuffix(".bin") + ".safetensors"
    return name.rsplit(".", 1)[0] + ".safetensors"


def _convert_file(src: Path, dst_dir: Path) -> str:
    """One pickled state_dict -> safetensors in `dst_dir`; returns the new file's name."""
    state = read_state_dict(src)
    # safetensors stores each buffer once: tensors sharing storage are cloned apart.
    seen: set[int] = set()
    out = {}
    for name, tensor in state.items():
        tensor = tensor.contiguous()
        key = tensor.untyped_storage().data_ptr()
        out[name] = tensor.clone() if key in seen else tensor
        seen.add(key)
    name = _safetensors_name(src.name)
    save_file(out, str(dst_dir / name), metadata={"format": "pt"})
    return name


def _convert_index(src: Path, dst: Path) -> None:
    index = json.loads(src.read_text())
    index["weight_map"] = {k: _safetensors_name(v) for k, v in index.get("weight_map", {}).items()}
    dst.write_text(json.dumps(index, indent=2))


def convert(src: str | Path, dst: str | Path, overwrite: bool = False) -> dict:
    """Copy the released directory `src` to `dst` with every pickled weight file rewritten as
    safetensors (and shard indexes pointing at the new names); other files are copied as
    they are. Returns {"converted": [...], "copied": n}."""
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"released model directory not found: {src}")
    if not is_released_dir(src):
        raise ValueError(f"{src} does not look like a released MIO-7B directory "
                         f"(no pytorch_model*.bin and no {IMAGE_TOKENIZER_DIR}/)")
    if dst.exists() and any(dst.iterdir()) and not overwrite:
        raise FileExistsError(f"{dst} exists and is not empty (pass --overwrite to replace it)")
    if dst.resolve() == src.resolve():
        raise ValueError("the converted copy must go to another directory than the release")
    files = sorted(p for p in src.rglob("*") if p.is_file())
    converted, copied = [], 0
    for k, path in enumerate(files, 1):
        rel = path.relative_to(src)
        target_dir = dst / rel.parent
        target_dir.mkdir(parents=True, exist_ok=True)
        if path.suffix in PICKLE_SUFFIXES and (path.parent / _safetensors_name(path.name)).is_file():
            continue  # the release already ships these weights as safetensors
        if path.suffix in PICKLE_SUFFIXES:
            log.info("[%d/%d] converting %s", k, len(files), rel)
            converted.append(str(rel.parent / _convert_file(path, target_dir)))
        elif path.name in INDEX_NAMES and (path.parent / INDEX_NAMES[path.name]).is_file():
            continue
        elif path.name in INDEX_NAMES:
            _convert_index(path, target_dir / INDEX_NAMES[path.name])
        else:
            shutil.copy2(path, target_dir / path.name)
            copied += 1
    log.info("converted %d weight files to safetensors, copied %d other files into %s", len(converted), copied, dst)
    return {"converted": converted, "copied": copied}
