"""Each package says what it exports (`__all__`), as httpx's tests/test_exported_members.py
asks of httpx: the names are sorted, unique and real, belong to the package, and
nothing public is defined in (or brought into) a package's `__init__` without being
listed there. Importing a package alone stays light: its exports load on first use."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys

import pytest

from tests.conftest import REPO

TOP = ("api", "common", "monkey", "workers")
PACKAGES = sorted(
    ".".join(path.parent.relative_to(REPO).parts)
    for top in TOP for path in (REPO / top).rglob("__init__.py")
)


def _within(module: str | None, package: str) -> bool:
    return module is not None and (module == package or module.startswith(package + "."))


def _init_of(package: str):
    return REPO.joinpath(*package.split("."), "__init__.py")


def _bound_in_init(package: str) -> set[str]:
    """Public names the package's __init__ defines, or imports from the package itself
    (a re-export). Names imported from elsewhere are its own business (PEP 8)."""
    names: set[str] = set()
    body = list(ast.parse(_init_of(package).read_text()).body)
    while body:
        node = body.pop()
        if isinstance(node, ast.If):  # `if TYPE_CHECKING:` imports, among others
            body += node.body + node.orelse
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom) and (node.level or _within(node.module, package)):
            names |= {alias.asname or alias.name for alias in node.names}
    return {n for n in names if not n.startswith("_")}


def test_every_package_is_found():
    assert {"api", "common", "common.producer", "monkey", "workers",
            "workers.runtimes"} <= set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_all_is_sorted_and_unique(package):
    exported = importlib.import_module(package).__all__
    assert isinstance(exported, list)
    assert exported == sorted(set(exported))


@pytest.mark.parametrize("package", PACKAGES)
def test_exported_names_exist_and_belong_to_the_package(package):
    module = importlib.import_module(package)
    defined_here = _bound_in_init(package)
    for name in module.__all__:
        value = getattr(module, name)  # a lazy export is imported here
        owner = getattr(value, "__module__", None)
        if owner is None:  # a constant: only its own assignment tells where it lives
            assert name in defined_here, f"{package}.{name} is not defined in {package}"
        else:
            assert _within(owner, package), (
                f"{package} exports {name} of {owner}: export it from there")


@pytest.mark.parametrize("package", PACKAGES)
def test_nothing_public_is_exported_by_accident(package):
    module = importlib.import_module(package)
    lazy = set(getattr(module, "_SOURCES", {}))  # what the package's __getattr__ serves
    unlisted = (_bound_in_init(package) | lazy) - set(module.__all__)
    assert not unlisted, (f"{package}/__init__.py makes {sorted(unlisted)} public: list "
                          "them in __all__, or give them a leading underscore")


def test_importing_the_packages_imports_none_of_their_exports():
    heavy = ("sqlalchemy", "celery", "kombu", "fastapi", "redis", "httpx", "pydantic",
             "torch")
    code = (f"import sys, {', '.join(TOP)}\n"
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "", f"importing {TOP} imported {out.stdout.strip()}"
