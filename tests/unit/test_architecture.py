"""The package's shape, checked from its source: no import cycles, and data flowing one way
(datasets -> train, which uses models, which use kernels; launch only wraps train; analysis reads
what train wrote; only the CLI parses arguments). Inside datasets, the read side never imports the
write side and the shared format imports neither; inside train, the loop's components and the
run's bookkeeping never import the loop. `python -m pytest tests/unit/test_architecture.py -q` is the proof."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGE = REPO / "prismlab"

MAY_NOT_IMPORT = {
    "prismlab.kernels": (
        "prismlab.datasets",
        "prismlab.models",
        "prismlab.train",
        "prismlab.launch",
        "prismlab.analysis",
    ),
    "prismlab.datasets": ("prismlab.models", "prismlab.train", "prismlab.launch", "prismlab.analysis", "prismlab.cli"),
    "prismlab.datasets.format": ("prismlab.datasets.read", "prismlab.datasets.write"),
    "prismlab.datasets.read": ("prismlab.datasets.write",),
    "prismlab.models": ("prismlab.datasets", "prismlab.train", "prismlab.launch", "prismlab.analysis"),
    "prismlab.train": ("prismlab.launch", "prismlab.analysis", "prismlab.cli"),
    "prismlab.train.components": ("prismlab.train.engine", "prismlab.train.build"),
    "prismlab.train.bookkeeping": ("prismlab.train.engine",),
    "prismlab.analysis": ("prismlab.launch", "prismlab.cli"),
    "prismlab.launch": ("prismlab.cli",),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, top_level_only: bool) -> set[str]:
    """prismlab modules `path` imports (at import time only, or anywhere in it)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
    return {name for name in found if name.startswith("prismlab")}


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolve(name: str) -> str | None:
    """The module an imported name lives in (`prismlab.a.b.func` -> `prismlab.a.b`)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def test_no_import_cycles():
    graph = {m: {resolve(n) for n in imports(p, top_level_only=True)} - {None, m} for m, p in MODULES.items()}
    state: dict[str, int] = {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for other in sorted(graph[module]):
            if state.get(other) == 1:
                cycle = stack[stack.index(other) :] + [other] if other in stack else [module, other]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if other not in state:
                visit(other, stack + [other])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("package", sorted(MAY_NOT_IMPORT))
def test_data_flows_one_way(package):
    wrong = sorted(
        f"{module} imports {name}"
        for module, path in MODULES.items()
        if module == package or module.startswith(package + ".")
        for name in imports(path, top_level_only=False)
        if name.startswith(MAY_NOT_IMPORT[package])
    )
    assert not wrong, wrong
