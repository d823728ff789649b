"""Every report of every recorded run, pinned whole (tests/data/golden/, see tests/golden.py).

A golden that differs fails with the diff. When the change is meant, regenerate them with
``python -m tests.golden --update`` and review ``git diff tests/data/golden/`` like code.
Also here: the widths every golden must fit, that a change to one format fails that
format's goldens only, that a live record and its JSON read back render the same bytes,
and that an ``--app`` run says the same headline and verdict in every format.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math

import pytest
from golden import GOLDEN, RECORDS, UPDATE, diff, fmt, goldens, placeholder_png, recorded
from rich.console import Console

from geventprobe.record import Verdict
from geventprobe.report import json_format, load, run
from geventprobe.report.formats import Html, Markdown, Terminal, Text
from geventprobe.report.formats import html as html_format
from geventprobe.report.formats import markdown as markdown_format
from geventprobe.report.formats import text as text_format

GOLDENS = goldens()


@pytest.mark.parametrize("name", list(GOLDENS))
def test_golden(name):
    want = (GOLDEN / name).read_text(encoding="utf-8")
    got = GOLDENS[name]()
    assert got == want, (f"{name} changed; if that is meant: {UPDATE}, then review "
                         f"git diff tests/data/golden/\n{diff(name, want, got)}")


def test_every_golden_is_rendered():
    """No golden file is left behind by a case that was removed."""
    assert sorted(p.name for p in GOLDEN.iterdir()) == sorted(GOLDENS)


@pytest.mark.parametrize("name", [n for n in GOLDENS if fmt(n) in ("terminal", "text")])
def test_goldens_fit_their_width(name):
    width = 80 if "-80" in name else 100
    for line in (GOLDEN / name).read_text(encoding="utf-8").splitlines():
        assert len(line) <= width, f"{name}: wider than {width}: {line!r}"
    assert "…" not in (GOLDEN / name).read_text(encoding="utf-8")


def _changed(monkeypatch, patch) -> set[str]:
    """The formats whose goldens differ once ``patch(monkeypatch)`` is applied."""
    with monkeypatch.context() as m:
        patch(m)
        return {fmt(name) for name, render in GOLDENS.items()
                if render() != (GOLDEN / name).read_text(encoding="utf-8")}


@pytest.mark.parametrize(("expected", "patch"), [
    ("terminal", lambda m: m.setattr(Terminal, "render",
                                     lambda self, doc, verbose=False: "changed")),
    ("text", lambda m: m.setattr(text_format, "_title", lambda title: ["", title.upper()])),
    ("markdown", lambda m: m.setattr(markdown_format, "cell", lambda text: f" {text} ")),
    ("html", lambda m: m.setattr(html_format, "inline", lambda text: text)),
    ("json", lambda m: m.setattr(json_format, "dumps", lambda data: "changed")),
])
def test_a_change_to_one_format_fails_its_goldens_only(monkeypatch, expected, patch):
    assert _changed(monkeypatch, patch) == {expected}


# ---------------------------------------------------------------- live record = JSON read back


def _term(doc, verbose=False, width=80):
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False)
    return Terminal(console).render(doc, verbose)


RENDERS = {
    "terminal": lambda r: _term(run.document(r)),
    "terminal -v": lambda r: _term(run.document(r), verbose=True),
    "text": lambda r: Text().render(run.document(r), verbose=True),
    "markdown": lambda r: Markdown().render(run.document(r)),
    "html": lambda r: Html(placeholder_png).render(run.document(r)),
    "json": json_format.render,
}


def live_like(result):
    """A record as the core may hand it over before any JSON: tuples where JSON has lists,
    an enum and int keys inside the untyped dicts, non-finite figures."""
    b = result.builds[0]
    facts = dict(b.facts, verdict_seen=Verdict.OK, pids=(1, 2), buckets={1: 2},
                 psycopg=dict(b.facts.get("psycopg") or {}, version=(b.facts.get("psycopg")
                                                               or {}).get("version")))
    metrics = dataclasses.replace(b.metrics, cpu_during_waits=math.nan,
                                  runnable_during_waits=math.inf) if b.metrics else None
    workers = [dataclasses.replace(w, cpu_per_query_us=math.nan, wait_factors=tuple(
        w.wait_factors)) for w in b.workers]
    b = dataclasses.replace(b, facts=facts, metrics=metrics, workers=workers)
    env = dict(result.environment, load_average=(0.5, 0.25, 0.125))
    profile = dict(result.profile, workload=dict(result.profile.get("workload") or {},
                                                 rounds=(1, 2)))
    return dataclasses.replace(result, builds=[b, *result.builds[1:]], environment=env,
                               profile=profile, notes=tuple(result.notes))


CASES = {**{name: (lambda name=name: recorded(name)) for name in RECORDS},
         "live-like": lambda: live_like(recorded("preload-http"))}


@pytest.mark.parametrize("fmt_name", list(RENDERS))
@pytest.mark.parametrize("case", list(CASES))
def test_a_live_record_renders_as_its_json_read_back(case, fmt_name):
    """``run --markdown`` and a later ``report r.json --format markdown`` give the same bytes,
    with no JSON round trip inside ``run``: the document reads a live record the way the
    loader rebuilds its file (``load.normalize``)."""
    live = CASES[case]()
    again = load.from_dict(json.loads(json_format.render(live)))
    assert RENDERS[fmt_name](live) == RENDERS[fmt_name](again)


def test_normalize_is_what_the_json_reads_back():
    live = live_like(recorded("preload-http"))
    again = load.from_dict(json.loads(json_format.render(live)))
    normal = load.normalize(live)
    assert json_format.to_dict(normal) == json_format.to_dict(again)
    b = normal.builds[0]
    assert b.metrics.cpu_during_waits is None  # NaN is written as null, read back as None
    assert b.facts["pids"] == [1, 2] and b.facts["verdict_seen"] == "OK"
    assert list(b.facts["buckets"]) == ["1"]


# ---------------------------------------------------------------- one headline, one verdict


def test_an_app_run_says_the_same_headline_and_verdict_in_every_format():
    r = recorded("app-routes")
    doc = run.document(r)
    assert doc.headline == "geventprobe: your app under gunicorn -k gevent"
    assert "POST /login BLOCKING" in doc.verdict and doc.verdict == r.summary
    outputs = {
        "terminal": " ".join(_term(doc).split()),
        "text": " ".join(Text().render(doc).split()),
        "markdown": Markdown().render(doc),
        "html": Html(placeholder_png).render(doc),
    }
    verdict = {"terminal": " ".join(doc.verdict.split()),
               "text": " ".join(doc.verdict.split()),
               "markdown": doc.verdict, "html": html_format.inline(doc.verdict)}
    for name, out in outputs.items():
        assert doc.headline in out, name
        assert verdict[name] in out, name
    assert "PostgreSQL drivers" not in outputs["markdown"] + outputs["html"]
    # The findings say what the verdict says: the route BLOCKS, the driver cooperates.
    assert "**Route POST /login is BLOCKING**" in doc.findings
    assert "Every psycopg 3 build" not in doc.findings
