"""`mio generate`: one reply to a multimodal prompt; media outputs are written to a folder.

The prompt is text with media references:

    {image:PATH}              an image file
    {video:PATH}              a video file (4 uniformly spaced frames)
    {speech:PATH} {audio:PATH}  an audio file (any format soundfile reads, any sample rate)
    {{ and }}                 literal braces

    mio generate --model runs/sft --prompt "Describe {image:cat.png} please" --out out
    mio generate --model runs/sft --prompt "Say hello" --mode voice
    mio generate --model runs/stage3 --base --prompt "Please generate an image of \\`\\`a red circle'': "

Chat models get the prompt as one user turn (`--mode std|voice`); `--base` continues the raw
sequence instead (the pre-training templates). The reply's text goes to stdout and to
OUT/PREFIX_text.txt; images, videos and speech to OUT/PREFIX_image_00.png,
PREFIX_video_00.gif, PREFIX_speech_00.wav; OUT/PREFIX.json lists everything written.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

from mio.api import MIO, save_segments
from mio.generate import MODALITIES, DecodingConfig
from mio.segments import Image, Malformed, Segment, Speech, Text, Video

log = logging.getLogger(__name__)

_REFERENCE = re.compile(r"\{\{|\}\}|\{(image|video|speech|audio):([^{}]+)\}")


def parse_prompt(prompt: str) -> list[Segment]:
    """Split a prompt into Text and media segments that hold the referenced paths (read and
    tokenized by `MIO.tokenize`)."""
    segments: list[Segment] = []
    text, pos = "", 0
    for match in _REFERENCE.finditer(prompt):
        text += prompt[pos:match.start()]
        pos = match.end()
        if match.group(0) in ("{{", "}}"):
            text += match.group(0)[0]
            continue
        if text:
            segments.append(Text(text))
            text = ""
        kind, path = match.group(1), match.group(2).strip()
        if kind == "image":
            segments.append(Image(image=Path(path)))
        elif kind == "video":
            segments.append(Video(frames=Path(path)))
        else:
            segments.append(Speech(wave=Path(path)))
    text += prompt[pos:]
    if text:
        segments.append(Text(text))
    return segments


def add_decoding_arguments(p: argparse.ArgumentParser) -> None:
    """Decoding flags shared with `mio chat`."""
    p.add_argument("--seed", type=int, default=0, help="random seed (sampling is reproducible)")
    p.add_argument("--max-new-tokens", type=int, default=DecodingConfig.max_new_tokens, help="longest reply in tokens")
    p.add_argument("--temperature", type=float, help="sampling temperature for every modality (default 1.0)")
    p.add_argument("--guidance-scale", type=float, default=1.0,
                   help="classifier-free guidance inside media blocks (1 = off)")
    p.add_argument("--greedy", action="store_true", help="greedy decoding for every modality (no beams, no sampling)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 | mps")


def decoding_from_args(args: argparse.Namespace) -> tuple[DecodingConfig, dict]:
    """The DecodingConfig and overrides the decoding flags ask for."""
    overrides = {"max_new_tokens": args.max_new_tokens, "guidance_scale": args.guidance_scale}
    if args.temperature is not None:
        overrides["temperature"] = args.temperature
    return (DecodingConfig.greedy() if args.greedy else DecodingConfig()), overrides


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = "Prompt syntax: {image:PATH} {video:PATH} {speech:PATH} (or {audio:PATH}); {{ and }} are braces."
    p.add_argument("--model", required=True, help="run directory (model, tokenizers, run.json)")
    p.add_argument("--prompt", required=True, help="prompt text with {image:PATH} / {video:PATH} / {speech:PATH}")
    p.add_argument("--mode", choices=("std", "voice"), default="std", help="chat mode (voice: reply in speech)")
    p.add_argument("--output-modalities", help=f"comma-separated subset of {','.join(MODALITIES)} (default: any)")
    p.add_argument("--base", action="store_true", help="continue the raw prompt with a base model (no chat template)")
    p.add_argument("--out", default="out", help="folder for the reply's files")
    p.add_argument("--prefix", default="reply_000", help="file name prefix")
    p.add_argument("--video-format", choices=("gif", "mp4"), default="gif", help="how generated videos are written")
    add_decoding_arguments(p)


def run(args: argparse.Namespace) -> int:
    modalities = args.output_modalities.split(",") if args.output_modalities else None
    decoding, overrides = decoding_from_args(args)
    mio = MIO.from_pretrained(args.model, device=args.device)
    prompt = parse_prompt(args.prompt)
    if args.base:
        reply = mio.complete(prompt, modalities, decoding, args.seed, **overrides)
    else:
        reply = mio.chat([{"role": "user", "content": prompt}], args.mode, modalities, decoding, args.seed,
                         **overrides)
    out = Path(args.out)
    paths = save_segments(reply, out, args.prefix, args.video_format)
    text = "".join(s.text for s in reply if isinstance(s, Text))
    manifest = {
        "text": text,
        "files": [str(p) for p in paths],
        "malformed": [{"modality": s.modality, "reason": s.reason} for s in reply if isinstance(s, Malformed)],
    }
    (out / f"{args.prefix}.json").write_text(json.dumps(manifest, indent=2) + "\n")
    sys.stdout.write(text + "\n")  # the reply is this command's output
    for path in paths:
        log.info("wrote %s", path)
    for bad in manifest["malformed"]:
        log.warning("the model wrote a malformed %s block: %s", bad["modality"], bad["reason"])
    return 0
