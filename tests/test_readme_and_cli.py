"""The README's set-up command is what CI runs, and the commands it documents exist."""

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from mio.cli.main import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def readme_quick_start() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", text, re.S).group(1)
    return [part.strip() for line in block.strip().splitlines() for part in line.split("&&")]


def test_ci_installs_and_tests_exactly_as_the_readme_says():
    steps = readme_quick_start()
    ci = (ROOT / ".ci" / "run").read_text()
    installs = [s for s in steps if s.startswith("pip install")]
    assert installs, steps
    for step in installs:
        assert f"pip install -q {step.removeprefix('pip install ')}" in ci, step
    assert steps[-1] in ci


def test_mio_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in {n.split()[0] for n in COMMANDS}:
        assert name in out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_has_help(command, capsys):
    module = COMMANDS[command][0]
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"command {command!r} points at missing module {module}")
    with pytest.raises(SystemExit) as e:
        main(shlex.split(command) + ["--help"])
    assert e.value.code == 0
    assert "usage: mio" in capsys.readouterr().out


def test_readme_commands_name_real_configs():
    text = (ROOT / "README.md").read_text()
    for path in re.findall(r"(?<![\w/])configs/[\w/]+\.toml", text):  # not runs/.../configs/
        assert (ROOT / path).is_file(), path
