"""The package's layers (STYLE.md; issue 11): a module imports only from its own
package or a lower layer, and no two packages import each other, not even
through a function-level import. Read from the source (every ``import``
statement but those under ``if TYPE_CHECKING:``), so a new upward import fails
here, not in review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PKG = SRC / "pycluster"

# Lower numbers are lower layers. The facade (pycluster/__init__.py) is the
# cluster API's face: it sits on primary/ and child/, under the supervisor.
RANK = {
    "errors": 0, "_compat": 0, "core": 0,
    "ipc": 1,
    "primary": 2, "child": 2,
    "facade": 3,
    "serve": 3.5,
    "master": 4, "control": 4,
    "cli": 5, "tui": 5, "__main__": 5,
    "examples": 6,
}
# Programs rather than library modules: the worker's and the fork server's
# entry points boot through the facade, as any app does.
PROGRAMS = {"pycluster.child.entry", "pycluster.master.forkserver.server"}
# primary/ and child/ are the two sides of one layer: neither imports the other.
SIDEWAYS = {("primary", "child"), ("child", "primary")}


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package(module: str) -> str:
    parts = module.split(".")
    return "facade" if len(parts) == 1 else parts[1]


def _imports(path: Path) -> set[str]:
    module = _module(path)
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                skipped.update(id(n) for n in ast.walk(inner))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "pycluster")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == "pycluster":
                target = node.module or ""
            else:
                continue
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names
                         if (SRC / Path(*f"{target}.{a.name}".split("."))).exists()
                         or (SRC / Path(*f"{target}.{a.name}".split("."))).with_suffix(".py").exists())
    return found


EDGES = {_module(p): _imports(p) for p in PKG.rglob("*.py")}


@pytest.mark.parametrize("module", sorted(EDGES))
def test_a_module_imports_only_its_own_layer_or_below(module):
    if module in PROGRAMS:
        return
    mine = _package(module)
    for target in EDGES[module]:
        theirs = _package(target)
        if theirs == mine:
            continue
        assert (mine, theirs) not in SIDEWAYS, f"{module} imports {target}: primary/ and child/ stay apart"
        assert RANK[theirs] <= RANK[mine], f"{module} ({mine}) imports {target} ({theirs}), a higher layer"


def test_no_two_packages_import_each_other():
    graph: dict[str, set[str]] = {}
    for module, targets in EDGES.items():
        if module in PROGRAMS:
            continue
        graph.setdefault(_package(module), set()).update(
            _package(t) for t in targets if _package(t) != _package(module))
    cycles = sorted(f"{a} <-> {b}" for a in graph for b in graph[a] if a < b and a in graph.get(b, set()))
    assert not cycles, f"packages importing each other: {cycles}"


def test_the_layer_table_knows_every_package():
    assert {_package(m) for m in EDGES} <= set(RANK)
