"""The dependency lock: uv.lock resolves pyproject.toml as it is now, the files in
requirements/ are exported from it with a hash for every requirement (torch aside, see
scripts/lock.py), nothing points at a local file, and make install's venv holds the
locked versions."""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.files import REPO

HASHED = ["backend", "ml", "runtime", "dev"]
HEAVY = {"torch", "transformers", "sentence-transformers"}


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def uv_lock() -> dict[str, set[str]]:
    """name -> the versions uv.lock pins (two where the resolution forks by Python)."""
    found: dict[str, set[str]] = {}
    for package in tomllib.loads((REPO / "uv.lock").read_text())["package"]:
        found.setdefault(package["name"], set()).add(package["version"])
    return found


def requirements(name: str) -> list[tuple[Requirement, list[str]]]:
    """Each requirement of requirements/NAME.txt with its hashes."""
    text = (REPO / "requirements" / f"{name}.txt").read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", line)
            found.append((Requirement(line.split(" --hash")[0]), hashes))
    return found


def header_extras(name: str) -> set[str]:
    """The extras of the uv export command recorded at the top of requirements/NAME.txt."""
    header = (REPO / "requirements" / f"{name}.txt").read_text().split("\n", 2)[1]
    return set(re.findall(r"--extra (\w+)", header))


def pinned(requirement: Requirement) -> str:
    (spec,) = requirement.specifier
    assert spec.operator == "==", requirement
    return spec.version


def torch_only() -> set[str]:
    return {canonicalize_name(r.name) for r, _ in requirements("torch")}


def test_uv_lock_resolves_pyproject_as_it_is():
    """A dependency added to or changed in pyproject.toml without `make lock` fails here."""
    project = pyproject()["project"]
    wanted = {(r, "") for r in project["dependencies"]}
    for extra, deps in project["optional-dependencies"].items():
        wanted |= {(r, extra) for r in deps}

    def key(name, extras, specifier, extra):
        return (canonicalize_name(name), tuple(sorted(extras)), str(specifier), extra)

    expected = set()
    for text, extra in wanted:
        r = Requirement(text)
        expected.add(key(r.name, r.extras, r.specifier, extra))
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    (ours,) = [p for p in lock["package"] if p["name"] == project["name"]]
    locked = set()
    for r in ours["metadata"]["requires-dist"]:
        extra = re.search(r"extra == '(\w+)'", r.get("marker", ""))
        group = extra[1] if extra else ""
        locked.add(key(r["name"], r.get("extras", []), r.get("specifier", ""), group))
    assert locked == expected, "uv.lock is out of date: run make lock"


@pytest.mark.parametrize("name", HASHED)
def test_hashed_files_pin_every_package_with_hashes_from_uv_lock(name):
    lock = uv_lock()
    found = requirements(name)
    assert found
    for requirement, hashes in found:
        assert hashes, f"requirements/{name}.txt: {requirement} has no hash"
        assert pinned(requirement) in lock[canonicalize_name(requirement.name)], requirement


@pytest.mark.parametrize("name", HASHED)
def test_hashed_files_leave_torch_and_its_cuda_libraries_out(name):
    names = {canonicalize_name(r.name) for r, _ in requirements(name)}
    assert not names & torch_only(), f"requirements/{name}.txt"
    assert "torch" not in names


def test_every_group_is_locked():
    extras = set(pyproject()["project"]["optional-dependencies"]) - {"all"}
    assert header_extras("dev") == extras, "make install takes every extra from dev.txt"
    assert header_extras("runtime") == extras - {"dev"}
    assert header_extras("backend") == {"api", "llm", "ops"}
    assert header_extras("ml") == {"ml"}


def test_backend_lock_has_no_torch_or_model_libraries():
    names = {canonicalize_name(r.name) for r, _ in requirements("backend")}
    assert not names & HEAVY
    assert not names & torch_only()


def test_torch_file_pins_pyprojects_torch_and_its_cuda_libraries_by_version():
    (torch_pin,) = [d for d in pyproject()["project"]["optional-dependencies"]["ml"]
                    if Requirement(d).name == "torch"]
    lock = uv_lock()
    found = requirements("torch")
    assert str(found[0][0]) == torch_pin.replace(" ", "")
    for requirement, hashes in found:
        assert not hashes, "torch.txt is a constraints file without hashes (scripts/lock.py)"
        assert pinned(requirement) in lock[canonicalize_name(requirement.name)], requirement
    others = {canonicalize_name(r.name) for r, _ in found} - {"torch"}
    assert others and all(n.startswith(("nvidia-", "cuda-", "triton")) for n in others)


def test_nothing_points_at_a_local_file():
    for path in [REPO / "uv.lock", *sorted((REPO / "requirements").glob("*.txt"))]:
        text = path.read_text()
        assert "file:" not in text and "/opt/" not in text, path
    assert set(re.findall(r'registry = "([^"]+)"', (REPO / "uv.lock").read_text())) == {
        "https://pypi.org/simple"
    }


def test_make_installs_venv_holds_the_locked_versions():
    stamp = Path(sys.prefix) / ".installed"
    if not stamp.exists():
        pytest.skip("not running in a venv built by make install")
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    wrong = []
    for name in ["dev", "torch"]:
        for requirement, _ in requirements(name):
            if requirement.marker and not requirement.marker.evaluate():
                continue
            have = installed.get(canonicalize_name(requirement.name))
            if name == "torch" and have is None and requirement.name != "torch":
                continue  # a CUDA library that the CPU build does not pull in
            if have is None or have.split("+")[0] != pinned(requirement):
                wrong.append(f"{requirement.name}: {have} instead of {pinned(requirement)}")
    assert not wrong, f"rm {stamp} and run make install: {wrong}"


@pytest.mark.parametrize(
    ("dockerfile", "locks"),
    [("backend", ["backend"]), ("ml", ["ml", "torch"])],
)
def test_dockerfiles_install_the_lock(dockerfile, locks):
    text = (REPO / "docker" / f"{dockerfile}.Dockerfile").read_text()
    assert f"pip install --require-hashes --no-deps -r requirements/{locks[0]}.txt" in text
    assert ("-c requirements/torch.txt torch" in text) == ("torch" in locks)
    copied = re.search(r"^COPY (requirements/.*) requirements/$", text, re.M)
    assert copied and copied[1].split() == [f"requirements/{n}.txt" for n in locks]
    assert 'pip install ".[' not in text
