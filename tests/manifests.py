"""The examples' manifests (``examples/**/example.json``): the one place their expected class is
written. The harness reads them (harness/README.md); so do the tests that run geventprobe on
the examples, instead of literals of their own.
"""

from __future__ import annotations

import json
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"
HARNESS = Path(__file__).parent.parent / "harness" / "harness.py"


def cases() -> list[tuple[str, dict]]:
    """Every (example, case), the example as its directory under examples/."""
    found = []
    for manifest in sorted(EXAMPLES.glob("**/example.json")):
        name = str(manifest.parent.relative_to(EXAMPLES))
        found += [(name, case) for case in json.loads(manifest.read_text())["cases"]]
    return found


def case(example: str, name: str | None = None) -> dict:
    """One case of ``example`` (its only one when ``name`` is None)."""
    mine = [c for e, c in cases() if e == example and name in (None, c.get("name"))]
    assert len(mine) == 1, f"{example} {name}: {len(mine)} cases"
    return mine[0]


def expect(example: str, name: str | None = None) -> str:
    """The class ``example`` (its case ``name``) shows, by its manifest."""
    return case(example, name)["expect"]


def case_id(example: str, c: dict) -> str:
    return f"{example}:{c['name']}" if c.get("name") else example


def geventprobe_class(build: dict) -> str:
    """The class geventprobe gave a case, from its JSON record's one build: the first of the
    user's routes or tasks that is not OK, else the app's or worker's own verdict (a route's
    or task's class is the subject's when the driver cooperates)."""
    mine = [r["verdict"] for r in build.get("routes") or []]
    mine += [t["verdict"] for t in build.get("tasks") or [] if not t["probe"]]
    return next((v for v in mine if v != "OK"), build["verdict"])
