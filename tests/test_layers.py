"""The layers point one way (issue 26): read every module's imports with ``ast``.

- nothing in ``processes/`` (starting and reaping processes, the embedded servers, the
  CPU sampler, the run directory) imports a kind of worker (``kinds/``) or the user's app
  (``app/``);
- ``core/`` and ``report/`` import no kind's module (only the registry, ``kinds``, and
  ``kinds/interface.py``), and branch on no kind's name.

The seam is being built in steps: the imports still crossing a layer are listed below by
module, and each list may only shrink: a listed import that is gone fails the test too,
so the list is always the truth.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "geventprobe"

# Crossings not yet taken out, each to go in a later step of issue 26.
PROCESSES_STILL_IMPORTING_APP: dict[str, set[str]] = {}
CORE_REPORT_STILL_IMPORTING_A_KIND: dict[str, set[str]] = {}


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top, in a function or under TYPE_CHECKING."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # ``from geventprobe.kinds.celery import app`` imports the module ``app``.
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def crossings(layer: str, into: tuple[str, ...]) -> dict[str, set[str]]:
    """The modules of ``layer`` importing anything under one of ``into``, and what."""
    out: dict[str, set[str]] = {}
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        bad = {name for name in imports_of(path)
               if any(name == top or name.startswith(top + ".") for top in into)}
        if bad:
            out[str(path.relative_to(PACKAGE))] = bad
    return out


def _only_modules(found: dict[str, set[str]]) -> dict[str, set[str]]:
    # ``from geventprobe.app.routes import AUTO`` also yields ``geventprobe.app.routes.AUTO``:
    # keep the names that are modules, and of ``from geventprobe.app import routes`` the
    # module ``routes``, not its package.
    out = {}
    for path, names in found.items():
        modules = {name for name in names if _is_module(name)}
        out[path] = {name for name in modules
                     if not any(other.startswith(name + ".") for other in modules)}
    return out


def _is_module(name: str) -> bool:
    parts = name.split(".")[1:]
    target = PACKAGE.joinpath(*parts)
    return target.with_suffix(".py").exists() or (target / "__init__.py").exists()


def test_processes_import_no_kind_and_no_app_beyond_the_listed_ones():
    found = _only_modules(crossings("processes", ("geventprobe.kinds", "geventprobe.app")))
    assert found == PROCESSES_STILL_IMPORTING_APP


# What core/ and report/ may import of kinds/: the registry and the interface, not a kind.
REGISTRY = {"geventprobe.kinds", "geventprobe.kinds.interface"}


def test_core_and_report_import_no_kind_beyond_the_listed_ones():
    found = _only_modules({**crossings("core", ("geventprobe.kinds",)),
                           **crossings("report", ("geventprobe.kinds",))})
    found = {path: names - REGISTRY for path, names in found.items() if names - REGISTRY}
    assert found == CORE_REPORT_STILL_IMPORTING_A_KIND


def test_the_reader_sees_imports_inside_functions_and_type_checking(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                      "    from geventprobe.kinds.celery.workers import CeleryRun\n"
                      "def f():\n    from geventprobe.kinds.celery import app\n")
    assert {"geventprobe.kinds.celery.workers", "geventprobe.kinds.celery.app"} \
        <= imports_of(source)


KIND_NAMES = {"celery", "gunicorn", "uwsgi"}


def branches_on_a_kind_name(layer: str) -> list[str]:
    """Every comparison in ``layer``'s code with a kind's name on one side
    (``kind == "celery"``, ``"celery" in facts``): where a kind was joined by a branch."""
    found = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Compare) and any(
                    isinstance(side, ast.Constant) and side.value in KIND_NAMES
                    for side in (node.left, *node.comparators)):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    return found


def test_core_and_report_branch_on_no_kind_name():
    # A kind's words and sections come from the kind (the Deployment it fills in, its
    # KindReport found by the name its run records), never from a test on its name here.
    assert branches_on_a_kind_name("core") == []
    assert branches_on_a_kind_name("report") == []
