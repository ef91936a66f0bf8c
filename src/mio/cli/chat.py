"""`mio chat`: a terminal chat with text, image, audio and video inputs and speech replies.

    mio chat --model runs/sft --out chat_out

Type a message and press enter. Commands:

    /image PATH   attach an image to your next message
    /audio PATH   attach an audio file (any rate)
    /video PATH   attach a video (4 frames)
    /voice        toggle answering in speech (voice mode)
    /reset        forget the conversation
    /help         this list
    /quit         leave

Replies print as text; their images, videos and speech are written to the output folder
(turn_000_image_00.png, turn_000_speech_00.wav, ...) and the paths printed. The terminal is
this command's interface, so it prints; diagnostics go to the log.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TextIO

from mio.api import MIO, save_segments
from mio.cli.generate import add_decoding_arguments, decoding_from_args
from mio.segments import Image, Malformed, Message, Segment, Speech, Text, Video

log = logging.getLogger(__name__)

HELP = """commands: /image PATH, /audio PATH, /video PATH (attach to your next message),
/voice (toggle speech replies), /reset (new conversation), /help, /quit"""

_ATTACH = {"/image": lambda p: Image(image=Path(p)), "/audio": lambda p: Speech(wave=Path(p)),
           "/video": lambda p: Video(frames=Path(p))}


class ChatSession:
    """The conversation state of a terminal chat: history, pending attachments, voice mode."""

    def __init__(self, mio: MIO, out_dir: str | Path, write: Callable[[str], None], seed: int = 0,
                 decoding=None, overrides: dict | None = None, voice: bool = False):
        self.mio, self.out_dir, self.write = mio, Path(out_dir), write
        self.seed, self.decoding, self.overrides = seed, decoding, overrides or {}
        self.voice = voice
        self.history: list[Message] = []
        self.pending: list[Segment] = []
        self.turn = 0

    def handle(self, line: str) -> bool:
        """Process one input line; returns False when the user quits."""
        line = line.strip()
        if not line:
            return True
        if line.startswith("/"):
            return self._command(line)
        message = Message("user", self.pending + [Text(line)])
        self.pending = []
        try:
            reply = self.mio.chat(self.history + [message], mode="voice" if self.voice else "std",
                                  decoding=self.decoding, seed=self.seed + self.turn, **self.overrides)
        except ValueError as e:  # e.g. the conversation outgrew the context
            self.write(f"error: {e}")
            return True
        self.history += [message, Message("assistant", [s for s in reply if not isinstance(s, Malformed)])]
        paths = save_segments(reply, self.out_dir, f"turn_{self.turn:03d}")
        self.turn += 1
        text = "".join(s.text for s in reply if isinstance(s, Text))
        self.write(f"mio> {text}")
        for path in paths:
            if path.suffix != ".txt":
                self.write(f"     [{path}]")
        for bad in (s for s in reply if isinstance(s, Malformed)):
            self.write(f"     [the model wrote a malformed {bad.modality} block: {bad.reason}]")
        return True

    def _command(self, line: str) -> bool:
        command, _, arg = line.partition(" ")
        arg = arg.strip()
        if command in ("/quit", "/exit"):
            return False
        if command == "/reset":
            self.history, self.pending = [], []
            self.write("(new conversation)")
        elif command == "/voice":
            self.voice = not self.voice
            self.write(f"(speech replies {'on' if self.voice else 'off'})")
        elif command == "/help":
            self.write(HELP)
        elif command in _ATTACH:
            if not arg:
                self.write(f"usage: {command} PATH")
                return True
            try:  # read and tokenize now, so a bad file is reported at once
                self.pending += self.mio.tokenize([_ATTACH[command](arg)])
            except ValueError as e:
                self.write(f"error: {e}")
                return True
            self.write(f"(attached {command[1:]} {arg})")
        else:
            self.write(f"unknown command {command}; {HELP}")
        return True


def _lines(stream: TextIO, prompt: Callable[[], None]) -> Iterator[str]:
    while True:
        prompt()
        line = stream.readline()
        if not line:
            return
        yield line


def chat_loop(session: ChatSession, lines: Iterable[str]) -> None:
    """Feed input lines to the session until they run out or the user quits."""
    for line in lines:
        if not session.handle(line):
            return


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = HELP
    p.add_argument("--model", required=True, help="run directory (model, tokenizers, run.json)")
    p.add_argument("--out", default="chat_out", help="folder for the replies' images, videos and speech")
    p.add_argument("--voice", action="store_true", help="start with speech replies on")
    add_decoding_arguments(p)


def run(args: argparse.Namespace) -> int:
    if sys.stdin is None or sys.stdin.closed:
        raise ValueError("mio chat reads your messages from standard input, which is closed")
    decoding, overrides = decoding_from_args(args)
    mio = MIO.from_pretrained(args.model, device=args.device)

    def write(text: str) -> None:
        print(text, flush=True)

    def prompt() -> None:
        if sys.stdin.isatty():
            print("you> ", end="", flush=True)

    session = ChatSession(mio, args.out, write, args.seed, decoding, overrides, voice=args.voice)
    write(f"MIO chat ({args.model}); replies' media go to {args.out}/. {HELP}")
    chat_loop(session, _lines(sys.stdin, prompt))
    return 0
