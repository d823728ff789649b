"""README.md and docs/*.md: every relative link resolves, the README stays a landing page.

A link to a file must name a file of the repository; a link to ``#anchor`` (alone or
after a file) must name a heading of that page, the way GitHub makes anchors.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "harness" / "README.md",
         ROOT / "examples" / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    out, fence = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        if not fence and line.startswith("#"):
            title = line.lstrip("#").strip().lower().replace("`", "")
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), f"{page.name}: {target} does not exist"
        if anchor and dest.suffix == ".md":
            assert anchor in anchors(dest), f"{page.name}: {target}: no such heading"


def test_readme_is_a_landing_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    # the two commands, exactly
    assert "scripts/bootstrap.sh && .venv/bin/geventprobe run --workers 4" in readme
    assert "scripts/bootstrap.sh && .venv/bin/python -m pytest" in readme
    # its sample output is drawn for 80 columns
    sample = readme.split("## Sample output", 1)[1].split("```", 2)[1]
    assert all(len(line) <= 80 for line in sample.splitlines())


def test_nothing_cites_notes_a_user_does_not_have():
    for path in [*PAGES, *ROOT.glob("src/**/*.py"), *ROOT.glob("examples/**/*.py"),
                 ROOT / "pyproject.toml"]:
        assert "FIELD-NOTES" not in path.read_text(), path
