"""The package layout is the data flow: every import points down the layers, and none forms a cycle.

    core (segments, vocab, templates, prompts, config, device, logs)
      -> media -> tokenizers -> data -> toyworld -> judges -> model, released -> train
      -> generate, decoder -> api -> eval, serve -> demo -> cli

A module may import from its own layer and the layers before it; imports inside functions
count too. The commands (`cli`) sit on top: nothing in the library imports them.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "mio"
LAYERS = [
    {"segments", "vocab", "templates", "prompts", "config", "device", "logs"},
    {"media"},
    {"tokenizers"},
    {"data"},
    {"toyworld"},
    {"judges"},
    {"model", "released"},
    {"train"},
    {"generate", "decoder"},
    {"api"},
    {"eval", "serve"},
    {"demo"},
    {"cli"},
]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every `mio.*` module `path` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mio.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mio":
            for alias in node.names:  # `from mio.judges import image` imports the module mio.judges.image
                sub = f"{node.module}.{alias.name}"
                found.add(sub if _path_of(sub) else node.module)
    return found


def _path_of(module: str) -> Path | None:
    base = PACKAGE.parent.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for rank, names in enumerate(LAYERS):
        if top in names:
            return rank
    raise AssertionError(f"{module}: not in any layer of tests/test_layout.py; place it there")


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m != name and m != "mio"} for name, path in modules.items()}


def test_every_import_points_down_the_layers():
    upward = [f"{src} -> {dst}" for src, dsts in _graph().items() if src != "mio" for dst in dsts
              if _layer(dst) > _layer(src)]
    assert not upward, "imports that run back up a layer:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(path[path.index(nxt):] + [node, nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt in graph and not state.get(nxt):
                visit(nxt, path + [node])
        state[node] = 2

    for node in sorted(graph):
        if not state.get(node):
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_check_sees_what_it_checks():
    graph = _graph()
    assert "mio.judges.image" in graph["mio.eval.suites"]  # `from mio.judges import image as ...`
    assert "mio.train.loop" in graph["mio.cli.train"]
    assert len(graph) > 50
