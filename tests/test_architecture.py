"""The layering of the package (docs/architecture.md): imports point down only, and no module import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import uqseg_cli

ROOT = Path(uqseg_cli.__file__).parent

# bottom to top; a module may import from its own layer or a lower one
LAYERS: list[set[str]] = [
    {"errors", "progress", "rng", "signals", "parsing", "__init__"},
    {"io"},
    {"metrics"},
    {"models"},
    {"bayes"},
    {"training"},
    {"quality"},
    {"explain"},
    {"stages"},
    {"cli", "__main__"},
]


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _target(name: str) -> str:
    """The module an imported dotted name lives in (``uqseg_cli.io.store.StageFile`` → ``uqseg_cli.io.store``)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("uqseg_cli"):
            for alias in node.names:
                found.add(_target(f"{node.module}.{alias.name}"))
        elif isinstance(node, ast.Import):
            found.update(_target(a.name) for a in node.names if a.name.startswith("uqseg_cli"))
    return found


def _layer(module: str) -> int:
    parts = module.split(".")
    head = parts[1] if len(parts) > 1 else "__init__"
    for i, names in enumerate(LAYERS):
        if head in names:
            return i
    raise AssertionError(f"{module}: not in any layer of tests/test_architecture.py (add it to LAYERS)")


def test_every_module_has_a_layer():
    for m in MODULES:
        _layer(m)


def test_imports_point_down_only():
    upward = []
    for m, path in MODULES.items():
        for t in _imports(path):
            if _layer(t) > _layer(m):
                upward.append(f"{m} imports {t}")
    assert not upward, "imports that do not point down:\n" + "\n".join(sorted(upward))


def test_no_import_cycle():
    graph = {m: {t for t in _imports(p) if t != m and t in MODULES} for m, p in MODULES.items()}
    # a package imports its own submodules (timm-style registration); that is the package, not a cycle
    for m in graph:
        graph[m] = {t for t in graph[m] if not (MODULES[m].name == "__init__.py" and t.startswith(m + "."))}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The checks can fail: a metrics module importing the CLI is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("from uqseg_cli.cli.common import finish\n")
    assert _imports(bad) == {"uqseg_cli.cli.common"}
    assert _layer("uqseg_cli.cli.common") > _layer("uqseg_cli.metrics.overlap")
