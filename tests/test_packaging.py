"""The package as pip builds it: every subpackage and data file is listed in pyproject.toml.

The editable install the tests run from finds every module whatever the list says, so a
subpackage missing from it only shows in a real wheel (``pip install geventprobe``): the
report formats were missing once. This reads the list; one test builds a real wheel, for the
harness the report embeds.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the tests run on 3.11
    import tomli as tomllib

ROOT = Path(__file__).parent.parent
SRC = ROOT / "src" / "geventprobe"


def _setuptools() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_subpackage_is_in_the_wheel():
    listed = set(_setuptools()["packages"])
    found = {"geventprobe." + ".".join(p.relative_to(SRC).parts)
             for p in SRC.rglob("*")
             if p.is_dir() and p.name != "__pycache__"
             and (any(p.glob("*.py")) or any(p.glob("*.json")))}
    missing = sorted(found - listed)
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"


def test_the_schema_ships_with_the_package():
    data = _setuptools()["package-data"]
    assert "*.json" in data["geventprobe.schema"]
    assert list((SRC / "schema").glob("*.json"))


def test_the_wheel_ships_the_harness_itself(tmp_path):
    """The harness the Markdown report embeds (report/repro.py reads it from the installed
    package) is, in a real wheel, byte for byte harness/harness.py. Builds the wheel as pip
    does (~8 s): its build backend, setuptools>=77, comes from the package index."""
    # From a copy: setuptools builds in the source tree (build/), and would reuse a stale one.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", "tests"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(source),
                            "-w", str(tmp_path)], capture_output=True, text=True, timeout=300,
                           cwd=tmp_path)
    if built.returncode != 0 and "No matching distribution" in built.stderr:
        pytest.skip("building a wheel needs setuptools>=77 from the package index, which is "
                    "out of reach here")
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("geventprobe-*.whl")
    with zipfile.ZipFile(wheel) as z:
        shipped = z.read("geventprobe/harness/harness.py")
    assert shipped == (ROOT / "harness" / "harness.py").read_bytes()
