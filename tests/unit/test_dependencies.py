"""What a fresh machine installs is what pyproject declares and what the lock pins.

A module imported but not declared works only while some other package happens to pull
it in (``certifi`` through httpx, ``msgpack`` through bullmq) and breaks the day that
package drops it. A lock that misses a declared package, or a runtime lock whose
versions differ from the test lock, means the image runs something CI never tested.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "operator" / "requeue"
#: The API stand-in: a top-level package beside requeue, whose imports the ``demo`` extra declares.
DEVCLUSTER = ROOT / "operator" / "devcluster"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: Subpackages of requeue that run only with the ``demo`` extra installed (the showcase).
DEMO_ONLY = ("demo",)
#: The project's own top-level packages: never third-party imports.
FIRST_PARTY = {"requeue", "devcluster"}


def declared(*extras: str) -> set[str]:
    """Distribution names (canonical) in ``dependencies`` and the given extras."""
    reqs = list(PYPROJECT["project"]["dependencies"])
    for extra in extras:
        reqs += PYPROJECT["project"]["optional-dependencies"][extra]
    names: set[str] = {canonicalize_name(Requirement(r).name) for r in reqs}
    return names - {"requeue"}


def pinned(lock: str) -> dict[str, str]:
    """``name -> version`` of every ``name==version ; marker`` line of a lock whose marker holds here."""
    found: dict[str, str] = {}
    for line in (ROOT / "requirements" / lock).read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            req = Requirement(line.rstrip("\\ "))
            if req.marker is None or req.marker.evaluate():
                found[canonicalize_name(req.name)] = str(req.specifier).removeprefix("==")
    return found


def third_party_imports(files: list[Path]) -> dict[str, set[str]]:
    """Top-level module name -> the files importing it, leaving out the stdlib and the project's own."""
    found: dict[str, set[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def imported(path: Path) -> set[str]:
    """Top-level names of every absolute import in ``path``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def undeclared(files: list[Path], allowed: set[str]) -> dict[str, set[str]]:
    """Imports whose distribution is not among ``allowed``."""
    providers = packages_distributions()
    return {
        module: where
        for module, where in third_party_imports(files).items()
        if not {canonicalize_name(d) for d in providers.get(module, [module])} & allowed
    }


def product_files() -> list[Path]:
    """requeue's modules that run without the ``demo`` extra (everything but the showcase)."""
    return [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in DEMO_ONLY]


def test_every_import_of_the_product_is_a_runtime_dependency() -> None:
    assert undeclared(product_files(), declared()) == {}


def test_the_product_does_not_import_the_dev_cluster() -> None:
    """A plain ``pip install requeue`` lacks kmock: only the demo may import devcluster (lazily)."""
    assert {str(p.relative_to(ROOT)) for p in product_files() if "devcluster" in imported(p)} == set()


def test_every_import_of_the_demo_is_declared_by_the_demo_extra() -> None:
    files = [p for sub in DEMO_ONLY for p in (PACKAGE / sub).rglob("*.py")]
    files += list(DEVCLUSTER.rglob("*.py"))
    assert files and undeclared(files, declared("demo")) == {}


def test_the_dev_cluster_does_not_import_requeue() -> None:
    """devcluster is test infrastructure for any operator: requeue's CRDs are passed in, not imported."""
    assert {str(p.relative_to(ROOT)) for p in DEVCLUSTER.rglob("*.py") if "requeue" in imported(p)} == set()


def test_the_lock_pins_every_declared_package() -> None:
    assert declared("demo", "test") - set(pinned("lock.txt")) == set()


def test_the_runtime_lock_is_the_test_lock_without_the_extras() -> None:
    runtime, full = pinned("runtime.txt"), pinned("lock.txt")
    assert declared() <= set(runtime)
    assert {name: version for name, version in runtime.items() if full.get(name) != version} == {}


def test_this_environment_is_the_lock() -> None:
    """`make test` installs from the lock; a drift here means the venv is stale (`make clean`)."""
    from importlib.metadata import distributions

    installed: dict[str, str] = {canonicalize_name(d.metadata["Name"]): d.version for d in distributions()}
    drift = {
        name: (version, installed.get(name))
        for name, version in pinned("lock.txt").items()
        if installed.get(name) != version
    }
    assert drift == {}
