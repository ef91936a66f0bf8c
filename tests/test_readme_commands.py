"""Every command in the README's "Commands" block runs as written, in order, through the
installed `mio` entry point: at smoke size where the written one takes minutes or more."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mio.cli.main import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
# How a long command runs here: README line prefix -> (the part replaced, its smoke-size stand-in).
SMOKE = {
    "mio toyworld configs/toyworld/default.toml": ("default.toml", "tiny.toml"),
    "mio tokenizer train image configs/tokenizer/image_default.toml": ("image_default.toml", "image_tiny.toml"),
    "mio tokenizer train image configs/tokenizer/image_vq.toml": ("image_vq.toml", "image_tiny.toml"),
    "mio tokenizer train speech configs/tokenizer/speech_default.toml": ("speech_default.toml", "speech_tiny.toml"),
    "mio bench train": ("--json", "--preset tiny --steps 2 --json"),
    "mio bench generate": ("--json", "--preset tiny --repeats 1 --new-tokens 4 --json"),
    "mio bench serve": ("--json", "--preset tiny --requests 4 --concurrency 2 --json"),
}
# Commands that cannot run here, and what tests them instead.
NOT_HERE = {
    "mio train configs/paper/": "needs the paper's data and the released tokenizers; tests/test_configs.py parses them",
    "torchrun ": "tests/test_train.py::test_torchrun_two_cpu_processes_fsdp2 runs FSDP2 on 2 CPU processes",
    "mio convert ": "needs a released MIO-7B directory; tests/test_released.py converts a tiny replica of its layout",
    "mio serve ": "a server runs until stopped; tests/test_serve.py starts one and talks to it with the openai client",
    "mio ui ": "a server runs until stopped; tests/test_ui.py starts one and drives it in headless Chromium",
}
STDIN = {"mio chat": "what colour is the circle?\n/quit\n"}


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Commands.*?```bash\n(.*?)```", text, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_the_block_documents_every_command():
    commands = readme_commands()
    for name in COMMANDS:
        assert any(c.startswith(f"mio {name}") for c in commands), f"README Commands block lacks `mio {name}`"
    for prefix in (*SMOKE, *NOT_HERE):
        assert any(c.startswith(prefix) for c in commands), f"stale entry in this test: {prefix!r}"


def test_readme_commands_run_as_written(tmp_path):
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    mio = shutil.which("mio", path=str(Path(sys.executable).parent)) or pytest.fail("the `mio` entry point is not installed")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for command in readme_commands():
        if any(command.startswith(p) for p in NOT_HERE):
            continue
        for prefix, (old, new) in SMOKE.items():
            if command.startswith(prefix):
                command = command.replace(old, new, 1)
        args = shlex.split(command)
        assert args[0] == "mio", command
        stdin = next((text for prefix, text in STDIN.items() if command.startswith(prefix)), "")
        done = subprocess.run([mio, *args[1:]], cwd=tmp_path, env=env, input=stdin, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"`{command}` exited {done.returncode}:\n{done.stderr[-3000:]}"
    assert (tmp_path / "runs" / "smoke" / "report.html").is_file()
    assert (tmp_path / "runs" / "smoke" / "eval.json").is_file()
    assert any((tmp_path / "runs" / "smoke" / "replies").iterdir())
    assert (tmp_path / "runs" / "stage1" / "model.safetensors").is_file()
    assert all((tmp_path / "runs" / f"bench_{name}.json").is_file() for name in ("train", "generate", "serve"))
