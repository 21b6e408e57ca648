"""No import cycles in `workers` and `common`: every import counts, at module level,
inside a function or under TYPE_CHECKING, so a cycle cannot hide behind a late import.
And no `global` statement: a worker process's state lives on its `Worker`.

Importing a module also runs its package's `__init__`; that implicit edge is left
out, as import linters do, or a package that re-exports its own modules would always
look circular."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("workers", "common")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool,
             known: set[str]) -> set[str]:
    """The modules of ours that one import statement loads."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the importer's package, up level - 1
            package = importer.split(".") if is_package else importer.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, base] if base else package)
        # `from pkg import mod` loads pkg.mod when it is a module, else pkg itself.
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                 for a in node.names]
    found = set()
    for name in names:
        while name and name not in known:  # `import a.b.c` of a name inside a module
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    files = {module_name(root, p): p for pkg in packages for p in (root / pkg).rglob("*.py")}
    known = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges |= imported(node, name, path.name == "__init__.py", known)
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path that starts and ends on the same module, or None."""
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in visiting:
            return [*visiting[visiting.index(node):], node]
        if node in done:
            return None
        visiting.append(node)
        for nxt in sorted(graph.get(node, ())):
            cycle = visit(nxt)
            if cycle:
                return cycle
        visiting.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start)
        if cycle:
            return cycle
    return None


def test_the_graph_sees_late_and_type_checking_imports():
    graph = {"a": {"b"}, "b": {"a"}}
    assert find_cycle(graph) == ["a", "b", "a"]
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from workers import lifecycle\n"
        "def f():\n    from common.db import Job\n"
    )
    known = {"workers", "workers.lifecycle", "common", "common.db"}
    edges = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            edges |= imported(node, "workers.x", False, known)
    assert edges == {"workers.lifecycle", "common.db"}


def test_workers_and_common_have_no_import_cycle():
    graph = import_graph(ROOT)
    assert "workers.lifecycle" in graph and "common.db" in graph  # it read the packages
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_module_rebinds_a_global():
    rebinding = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for pkg in PACKAGES for path in (ROOT / pkg).rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Global)
    ]
    assert not rebinding, rebinding
