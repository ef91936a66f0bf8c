"""Count what random bad input does at MIO's public boundaries (issue 22's measure):

    python tests/fuzz_report.py --cases 500 --json runs/fuzz.json

Each case is drawn at random for one boundary (id streams through both parsers, decoding
options, messages and content parts, media bytes, stage configs, manifest lines, run
directories with one file truncated, garbled, emptied or deleted, `mio` command lines with odd
arguments, files, configs and stdin) and classified as
`handled` (a result, or the right result), `clear_error` (a ValueError or OSError: what the
CLI prints in one line), `traceback` (any other exception), `corruption` (a wrong result
accepted: the two parsers disagree, or a non-finite setting accepted) or `hang` (no answer
within --timeout seconds). Prints one JSON object: counts per boundary and in all, and the
first few tracebacks and corruptions with their inputs.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import io
import json
import math
import os
import random
import signal
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image as PILImage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import CORPUS, SMALL_LAYOUT, make_run_dir  # noqa: E402
from mio.api import MIO  # noqa: E402
from mio.tokenizers.text import build_text_tokenizer  # noqa: E402
from mio.train.loop import TrainConfig  # noqa: E402
from mio.vocab import StreamParser  # noqa: E402

ODD_VALUES = [None, True, False, 0, -1, 1, 2**70, -2**70, 0.0, 1e-45, -0.5, 0.5, 1.5, 1e300, math.nan, math.inf,
              -math.inf, "", "8", "abc", [], [1], {}, {"a": 1}]


class Hang(Exception):
    """The case ran past its time limit."""


def _alarm(signum, frame):
    raise Hang


def _id_stream(rng: random.Random, vocab) -> list[int]:
    lo, hi = vocab.image_range
    slo, shi = vocab.speech_range
    markers = [vocab.image_start, vocab.image_end, vocab.speech_start, vocab.speech_end]
    ids = []
    for _ in range(rng.randint(0, 12)):
        kind = rng.random()
        if kind < 0.25:
            ids += [rng.randrange(lo) for _ in range(rng.randint(1, 4))]
        elif kind < 0.45:
            ids.append(rng.choice(markers))
        elif kind < 0.6:
            ids += [rng.randrange(lo, hi) for _ in range(rng.randint(0, 10))]
        elif kind < 0.75:
            ids += [rng.randrange(slo, shi) for _ in range(rng.randint(0, 8))]
        elif kind < 0.9:
            ids += vocab.image_ids([rng.randrange(hi - lo) for _ in range(vocab.layout.tokens_per_image)])
        else:
            t = rng.randint(1, 3)
            ids += vocab.speech_ids([[rng.randrange(vocab.layout.speech_codebook_size) for _ in range(t)]
                                     for _ in range(4)], timbre=True)
    return ids


def _key(segment) -> tuple:
    codes = getattr(segment, "codes", None)
    frames = getattr(segment, "frames", None)
    return (type(segment).__name__, getattr(segment, "text", None), getattr(segment, "reason", None),
            None if codes is None else tuple(codes.flatten().tolist()),
            None if frames is None else tuple(_key(f) for f in frames))


def _merged(segments) -> list:
    out = []
    for s in segments:
        if type(s).__name__ == "Text" and out and type(out[-1]).__name__ == "Text":
            out[-1] = type(s)(out[-1].text + s.text)
        else:
            out.append(s)
    return [_key(s) for s in out]


def case_id_stream(rng, mio):
    ids = _id_stream(rng, mio.vocab)
    video = rng.random() < 0.5
    whole = mio.vocab.parse(ids, video=video)
    parser = StreamParser(mio.vocab, video=video)
    streamed = [s for t in ids for s in parser.feed(t)] + parser.close()
    if _merged(streamed) != _merged(whole):
        return "corruption", {"ids": ids, "video": video}
    return "handled", None


def case_decoding(rng, mio):
    option = rng.choice(["temperature", "top_p", "top_k", "repetition_penalty", "max_new_tokens", "guidance_scale",
                         "num_beams", "do_sample", "seed"])
    value = rng.choice(ODD_VALUES)
    kwargs = {option: value}
    if option != "max_new_tokens":
        kwargs["max_new_tokens"] = 3
    mio.chat([{"role": "user", "content": "red circle"}], **kwargs)
    if isinstance(value, float) and not math.isfinite(value):
        return "corruption", kwargs
    return "handled", None


def _part(rng):
    kind = rng.random()
    if kind < 0.2:
        return rng.choice(ODD_VALUES)
    if kind < 0.4:
        return {"type": rng.choice(["text", "image_url", "input_audio", "video", None, 3]), "text": rng.choice(ODD_VALUES)}
    if kind < 0.6:
        return {"type": "image_url", "image_url": rng.choice([{"url": rng.choice(["data:image/png;base64,AAAA",
                                                                                  "https://x/y.png", "/nope.png", ""])},
                                                             "data:,", None])}
    if kind < 0.8:
        return {"type": "input_audio", "input_audio": {"data": base64.b64encode(rng.randbytes(rng.randint(0, 64))).decode(),
                                                       "format": rng.choice(["wav", "mp3", "aiff", None])}}
    return rng.choice(["hi", "a red circle"])


def case_messages(rng, mio):
    kind = rng.random()
    if kind < 0.2:
        messages = _part(rng)
    else:
        messages = [rng.choice([{"role": rng.choice(["user", "assistant", "system", "bot", None]),
                                 "content": rng.choice([_part(rng), [_part(rng), _part(rng)]])},
                                _part(rng)]) for _ in range(rng.randint(0, 3))]
    mio.chat_prompt(messages)
    return "handled", None


def _media_bytes(rng) -> tuple[bytes, str]:
    kind = rng.random()
    if kind < 0.3:
        return rng.randbytes(rng.randint(0, 400)), "noise"
    image = PILImage.fromarray(np.asarray([[rng.randrange(256)] * 3] * 16, np.uint8).reshape(4, 4, 3))
    if kind < 0.6:
        mode = rng.choice(["RGB", "RGBA", "L", "LA", "P", "CMYK", "I", "F", "1"])
        buffer = io.BytesIO()
        fmt = rng.choice(["PNG", "TIFF", "GIF", "BMP", "JPEG"])
        try:
            image.convert(mode).save(buffer, format=fmt)
        except (OSError, ValueError, KeyError):  # that mode has no encoder in that format
            image.save(buffer, format="PNG")
        data = buffer.getvalue()
        if rng.random() < 0.3:
            data = data[: rng.randint(0, len(data))]
        return data, "image"
    rate = rng.choice([1, 8000, 16000, 44100, 10**6])
    samples = rng.choice([1, 100, 1600, 16000])
    wave = np.sin(np.arange(samples) / 3.0) * rng.choice([0.0, 1e-6, 0.3, 1.0])
    buffer = io.BytesIO()
    import soundfile as sf

    sf.write(buffer, wave.astype(np.float32), max(rate, 1), format="WAV", subtype="FLOAT")
    return buffer.getvalue(), "audio"


def case_media(rng, mio):
    data, _ = _media_bytes(rng)
    encoded = base64.b64encode(data).decode()
    part = rng.choice([{"type": "image_url", "image_url": {"url": "data:image/png;base64," + encoded}},
                       {"type": "input_audio", "input_audio": {"data": encoded, "format": "wav"}}])
    mio.chat_prompt([{"role": "user", "content": [part]}])
    return "handled", None


CONFIG_FIELDS = ["steps", "batch_size", "grad_accum", "context_length", "buffer_rows", "log_every", "eval_every",
                 "eval_docs", "save_every", "keep_checkpoints", "seed", "precision", "optim.lr", "optim.warmup_ratio",
                 "optim.min_lr_ratio", "optim.beta1", "optim.beta2", "optim.grad_clip", "optim.weight_decay",
                 "model.hidden_size", "model.num_heads", "model.num_kv_heads", "model.num_layers", "model.rope_theta"]


def case_config(rng, mio):
    from mio.config import load

    field = rng.choice(CONFIG_FIELDS)
    value = rng.choice(ODD_VALUES)
    base = {"name": "s", "out_dir": "o", "text_tokenizer": "t",
            "data": {"ratios": {"lang": 1}, "sources": {"language": "shards/language"}}}
    cfg = load(TrainConfig, base, {field: value})
    cfg.validate()
    got = cfg
    for part in field.split("."):
        got = getattr(got, part)
    if isinstance(got, float) and not math.isfinite(got):
        return "corruption", {field: value}
    return "handled", None


def _json_value(rng, depth: int = 0):
    if depth > 2 or rng.random() < 0.5:
        return rng.choice([*ODD_VALUES[:13], "media/a.png", "text", "image", "speech", "user", "sft"])
    if rng.random() < 0.5:
        return [_json_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = ["type", "segments", "text", "image", "video", "speech", "messages", "role", "content", "task", "mode",
            "id", "extra"]
    return {rng.choice(keys): _json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def case_manifest(rng, mio):
    from mio.data.manifest import parse_line

    line = json.dumps(_json_value(rng, depth=1), default=str) if rng.random() < 0.9 else rng.choice(["{", "[1,", "", "nan"])
    parse_line(line, Path("/nonexistent"), "fuzz.jsonl:1", rng.choice([None, "language", "image_text_pair"]))
    return "handled", None


RUN_FILES = ["config.json", "run.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors",
             "image_tokenizer/config.json", "image_tokenizer/model.safetensors", "speech_tokenizer/config.json",
             "speech_tokenizer/model.safetensors"]


def case_run_dir(rng, mio, run_dir: Path):
    import shutil

    run = Path(tempfile.mkdtemp())
    try:
        shutil.copytree(run_dir, run, dirs_exist_ok=True)
        target = run / rng.choice(RUN_FILES)
        if target.is_file():
            data = target.read_bytes()
            damage = rng.choice(["truncate", "garble", "empty", "delete"])
            if damage == "delete":
                target.unlink()
            else:
                cut = rng.randint(0, max(len(data) - 1, 0))
                target.write_bytes({"truncate": data[:cut], "empty": b"",
                                    "garble": data[:cut] + rng.randbytes(16) + data[cut + 16:]}[damage])
        MIO.from_pretrained(run, device="cpu")
        return "handled", None
    finally:
        shutil.rmtree(run, ignore_errors=True)


CLI_VALUES = {
    "number": ["0", "-1", "1", "3", "1.5", "nan", "inf", "-inf", "1e-45", "2" * 30, "abc", ""],
    "device": ["auto", "cpu", "cuda", "cuda:7", "mps", "banana", ""],
    "name": ["x", "../../x", "", ".hidden", "a/b", "text_mcq", "image_generation", "bogus"],
}
CLI_FLAGS = {"--max-new-tokens": "number", "--temperature": "number", "--seed": "number", "--guidance-scale": "number",
             "--limit": "number", "--batch-size": "number", "--device": "device", "--prefix": "name", "--suite": "name",
             "--output-modalities": "name", "--out": "path"}
COMMAND_FLAGS = {
    "generate": ["--max-new-tokens", "--temperature", "--seed", "--guidance-scale", "--device", "--prefix",
                 "--output-modalities", "--out"],
    "chat": ["--max-new-tokens", "--temperature", "--seed", "--guidance-scale", "--device", "--out"],
    "eval": ["--limit", "--batch-size", "--seed", "--device", "--suite", "--out"],
}


def _toml_text(rng) -> str:
    if rng.random() < 0.2:
        return rng.choice(["", "[", "name = ", "= 3", "\x00\xff", "[model]\n[model]\n", "steps = 1\nsteps = 2\n"])
    lines = []
    for _ in range(rng.randint(0, 6)):
        key = rng.choice([*CONFIG_FIELDS, "name", "out_dir", "text_tokenizer", "manifest", "image_tokenizer",
                          "data.ratios", "data.sources.language", "sources", "bogus"])
        value = rng.choice(['"x"', "1", "0", "-3", "1.5", "nan", "inf", "true", "[]", "{}", '"runs/o"', '"/nonexistent"'])
        lines.append(f"{key} = {value}" if "." not in key else f'{key.split(".")[-1]} = {value}')
    return "\n".join(lines) + "\n"


def case_cli(rng, mio, run_dir: Path):
    """One `mio` command line with odd arguments, files or stdin, run in-process from a scratch
    folder: a non-zero exit is a clear error (`main` reports ValueError and OSError in one
    line; anything else escapes it and counts as a traceback)."""
    from mio.cli.main import main

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        odd_file = tmp / "odd.png"
        odd_file.write_bytes(_media_bytes(rng)[0])
        model = rng.choice([str(run_dir)] * 4 + [str(tmp), str(odd_file), "/nonexistent"])
        command = rng.choice(["generate", "chat", "eval", "prepare", "train"])
        if command in ("generate", "chat", "eval"):
            argv = [command, "--model", model]
            if command == "generate":
                argv += ["--prompt", rng.choice(["a red circle", f"{{image:{odd_file}}} what is this?", "{image:", "}{",
                                                 f"{{speech:{odd_file}}}", f"{{video:{odd_file}}}", "{bogus:x}", ""])]
            if command == "eval":
                argv += ["--world", rng.choice([str(tmp), str(odd_file), "/nonexistent"])]
            for _ in range(rng.randint(0, 3)):
                flag = rng.choice(COMMAND_FLAGS[command])
                kind = CLI_FLAGS[flag]
                paths = [str(odd_file), str(tmp / "new"), "/proc/x"]
                value = rng.choice(paths if kind == "path" else CLI_VALUES[kind])
                argv += [flag, value]
            if "--max-new-tokens" not in argv:
                argv += ["--max-new-tokens", "3"] if command != "eval" else ["--limit", "1"]
        else:
            config = tmp / "c.toml"
            config.write_text(_toml_text(rng))
            argv = [command, str(config)]
            if rng.random() < 0.5 and command == "train":
                argv += ["--set", rng.choice(CONFIG_FIELDS) + "=" + rng.choice(CLI_VALUES["number"])]
            elif rng.random() < 0.5:
                argv.append("--overwrite")
        lines = "\n".join(rng.choice(["hi", "/image " + str(odd_file), "/audio " + str(odd_file), "/video /nope", "/voice",
                                       "/reset", "/bogus", "", "/image"]) for _ in range(rng.randint(0, 4)))
        stdin, sys.stdin, cwd = sys.stdin, io.StringIO(lines), os.getcwd()
        os.chdir(tmp)  # default output folders land here
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # chat's replies
                code = main(argv)
        except SystemExit as e:  # argparse's one-line usage error
            code = e.code
        finally:
            sys.stdin = stdin
            os.chdir(cwd)
    return ("handled" if code == 0 else "clear_error"), argv


CASES = {"id_stream": case_id_stream, "decoding": case_decoding, "messages": case_messages, "media": case_media,
         "config": case_config, "manifest": case_manifest, "run_dir": case_run_dir}
"""Each boundary's case: `fn(rng, mio)` (run_dir also gets the run directory it damages)."""


def run(cases: int, timeout: float, seed: int) -> dict:
    """The report of `cases` random cases per boundary (see the module docstring)."""
    torch.set_num_threads(1)
    tokenizer = build_text_tokenizer(CORPUS, vocab_size=400, layout=SMALL_LAYOUT)
    with tempfile.TemporaryDirectory() as tmp:
        mio = MIO.from_pretrained(make_run_dir(Path(tmp), tokenizer), device="cpu")
        return _run(mio, Path(tmp), cases, timeout, seed)


def _run(mio: MIO, run_dir: Path, cases: int, timeout: float, seed: int) -> dict:
    signal.signal(signal.SIGALRM, _alarm)
    boundaries = {**CASES, "run_dir": functools.partial(case_run_dir, run_dir=run_dir),
                  "cli": functools.partial(case_cli, run_dir=run_dir)}
    counts = {name: Counter() for name in boundaries}
    examples: list[dict] = []
    for name, fn in boundaries.items():
        rng = random.Random(f"{seed}-{name}")
        for k in range(cases):
            signal.setitimer(signal.ITIMER_REAL, timeout)
            detail = None
            try:
                outcome, detail = fn(rng, mio)
                if outcome == "clear_error":  # a CLI exit: the error was reported in one line
                    detail = None
            except Hang:
                outcome = "hang"
            except (ValueError, OSError):
                outcome = "clear_error"
            except Exception as e:  # what issue 22 counts as a traceback
                outcome, detail = "traceback", f"{type(e).__name__}: {e}"
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            counts[name][outcome] += 1
            if outcome in ("traceback", "corruption", "hang") and len(examples) < 20:
                examples.append({"boundary": name, "case": k, "outcome": outcome, "detail": str(detail)[:300]})
    total = sum(counts.values(), Counter())
    return {"cases_per_boundary": cases, "seed": seed, "counts": {k: dict(v) for k, v in counts.items()},
            "total": dict(total), "examples": examples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=300, help="random cases per boundary")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds before a case counts as a hang")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args()
    report = run(args.cases, args.timeout, args.seed)
    text = json.dumps(report, indent=1)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
