"""The package as pip builds it: every subpackage and data file is listed in pyproject.toml.

The editable install the tests run from finds every module whatever the list says, so a
subpackage missing from it only shows in a real wheel (``pip install geventprobe``): the
report formats were missing once. This reads the list instead of building a wheel.
"""

from __future__ import annotations

import sys
from pathlib import Path

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
