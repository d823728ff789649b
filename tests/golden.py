"""Golden files: every report format of every recorded run, pinned whole in tests/data/golden/.

``tests/test_golden.py`` renders each one again and compares it byte for byte. When a
change to the reports is meant, regenerate them and review the diff like code:

    .venv/bin/python -m tests.golden --update     # rewrite tests/data/golden/
    git diff tests/data/golden/                   # read every changed line before committing

``--check`` (the default) lists the goldens that differ, without writing. The records are
tests/data/run-*.json (see tests/test_reports.py for how each was made); the bisect is
built from recorded rows (``bisected``). Terminal goldens are drawn without colour, at 80
columns (an 80-column terminal) and at 100 (a pipe, a CI log), and with ``-v`` at 80.
HTML goldens embed a placeholder instead of the charts' PNG (``PNG`` in base64, ``UE5H``),
so they do not depend on matplotlib; the charts themselves are tested apart. Markdown and
HTML goldens hold a one-line stand-in where a report embeds the harness (harness/harness.py,
~750 lines): that it is the file itself is tests/test_harness.py's check, and a change to
the harness does not rewrite twenty goldens.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import html
import io
import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from geventprobe.compare import compare
from geventprobe.report import bisection, comparison, json_format, load, repro, run
from geventprobe.report.formats import Html, Markdown, Terminal, Text

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "golden"
RECORDS = ["default", "preload", "busy-wait", "preload-http", "matrix", "app-routes",
           "calibrate", "app-causes", "celery", "celery-stall", "app-auto",
           "app-cpu", "uwsgi", "uwsgi-ok", "uwsgi-builds"]
"""tests/data/run-<name>.json"""
COMPARES = {"preload-default": ("preload", "default", False),
            "default-preload": ("default", "preload", False),
            "preload-busy-wait": ("preload", "busy-wait", False),
            "celery-ok-blocking": ("celery-ok", "celery-blocking", False)}
"""Removing --preload fixed two builds; adding it back regressed them; a comparison refused
(the workloads differ); a celery worker regressed (its queue time from hundredths of a second
to seconds: tests/data/run-celery-ok.json and run-celery-blocking.json, recorded for it)."""
UPDATE = "python -m tests.golden --update"


def recorded(name: str):
    """A recorded run, as ``geventprobe report`` reads it."""
    return load.load(str(DATA / f"run-{name}.json"))


def bisected():
    """A bisect of psycopg 3.1.4..3.1.6 built from recorded rows (OK, then wait_c BLOCKING)."""
    from geventprobe.versions.bisect import BisectResult, BisectStep

    r = recorded("preload")
    good = next(b for b in r.builds if b.build == "python")
    bad = next(b for b in r.builds if b.build == "binary")
    good = dataclasses.replace(good, build="binary", facts=dict(
        good.facts, psycopg={"version": "3.1.4", "impl": "binary", "wait": "wait_selector"}))
    steps = [BisectStep("3.1.4", "good", good, None),
             BisectStep("3.1.6", "bad", bad, None),
             BisectStep("3.1.5", "bad", bad, None)]
    return BisectResult(
        schema_version=1, tool_version="0", started_at="", duration_s=60.0, command=[],
        package="psycopg", build="binary", good="3.1.4", bad="3.1.6", preload=False,
        releases=["3.1.4", "3.1.5", "3.1.6"], held={"gevent": "26.9.0", "gunicorn": "27.0.1"},
        steps=steps, first_bad="3.1.5", last_good="3.1.4", untested=[],
        conclusion="first bad release: psycopg 3.1.5 (3.1.4 is OK)", exit_code=0,
        server={}, environment={})


def terminal(doc, width: int, verbose: bool = False) -> str:
    """What a ``width``-column terminal shows, without colour."""
    console = Console(file=io.StringIO(), width=width, color_system=None,
                      force_terminal=False, highlight=False)
    return Terminal(console).render(doc, verbose)


def placeholder_png(charts) -> bytes:
    """The charts' stand-in in an HTML golden."""
    return b"PNG"


HARNESS_STANDIN = "# harness/harness.py, embedded whole (tests/golden.py: a stand-in)"


def standin(text: str) -> str:
    """A rendered report with the harness it embeds replaced by ``HARNESS_STANDIN``."""
    source = repro.harness_source().rstrip()
    return text.replace(source, HARNESS_STANDIN).replace(html.escape(source),
                                                         html.escape(HARNESS_STANDIN))


def _run_goldens() -> dict[str, Callable[[], str]]:
    out: dict[str, Callable[[], str]] = {}
    for name in RECORDS:
        def doc(name=name):
            return run.document(recorded(name))

        out |= {
            f"{name}.terminal-80.txt": lambda doc=doc: terminal(doc(), 80),
            f"{name}.terminal-80-v.txt": lambda doc=doc: terminal(doc(), 80, verbose=True),
            f"{name}.terminal-100.txt": lambda doc=doc: terminal(doc(), 100),
            f"{name}.text.txt": lambda doc=doc: Text().render(doc()),
            f"{name}.md": lambda doc=doc: standin(Markdown().render(doc())),
            f"{name}.html": lambda doc=doc: standin(Html(placeholder_png).render(doc())),
            f"{name}.json": lambda name=name: json_format.render(recorded(name)),
        }
    return out


def _compare_goldens() -> dict[str, Callable[[], str]]:
    out: dict[str, Callable[[], str]] = {}
    for name, (before, after, force) in COMPARES.items():
        def made(before=before, after=after, force=force):
            return compare(recorded(before), recorded(after), force=force)

        out |= {
            f"compare-{name}.terminal-80.txt":
                lambda made=made: terminal(comparison.document(made()), 80),
            f"compare-{name}.terminal-80-v.txt":
                lambda made=made: terminal(comparison.document(made()), 80, verbose=True),
            f"compare-{name}.terminal-100.txt":
                lambda made=made: terminal(comparison.document(made()), 100),
            f"compare-{name}.md": lambda made=made: Markdown().render(comparison.document(made())),
            f"compare-{name}.json": lambda made=made: comparison.render_json(made()),
        }
    return out


def goldens() -> dict[str, Callable[[], str]]:
    """Every golden file's name → how to render it now."""
    return {
        **_run_goldens(),
        **_compare_goldens(),
        "bisect.terminal-80.txt": lambda: terminal(bisection.document(bisected()), 80),
        "bisect.terminal-100-v.txt":
            lambda: terminal(bisection.document(bisected()), 100, verbose=True),
        "bisect.json": lambda: bisection.render_json(bisected()),
    }


def fmt(name: str) -> str:
    """The format a golden pins: ``terminal``, ``text``, ``markdown``, ``html`` or ``json``."""
    if ".terminal-" in name:
        return "terminal"
    return {".txt": "text", ".md": "markdown", ".html": "html", ".json": "json"}[
        Path(name).suffix]


def diff(name: str, want: str, got: str) -> str:
    """A unified diff of a golden against what renders now, for a failure message."""
    lines = difflib.unified_diff(want.splitlines(keepends=True), got.splitlines(keepends=True),
                                 f"tests/data/golden/{name}", "rendered now", n=2)
    return "".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Check (default) or rewrite (``--update``) every golden; exit 1 when one differs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="rewrite tests/data/golden/")
    args = parser.parse_args(argv)
    GOLDEN.mkdir(parents=True, exist_ok=True)
    wanted = goldens()
    changed = []
    for name, render in wanted.items():
        path = GOLDEN / name
        now = render()
        if not path.exists() or path.read_text(encoding="utf-8") != now:
            changed.append(name)
            if args.update:
                path.write_text(now, encoding="utf-8")
    stale = sorted(p.name for p in GOLDEN.iterdir() if p.name not in wanted)
    for name in stale:
        if args.update:
            (GOLDEN / name).unlink()
    verb = "rewrote" if args.update else "differ"
    print(f"{len(wanted)} goldens; {verb}: {', '.join(changed) or 'none'}"
          + (f"; {'removed' if args.update else 'stale'}: {', '.join(stale)}" if stale else ""))
    if changed and args.update:
        print("review the diff before committing: git diff tests/data/golden/")
    return 1 if (changed or stale) and not args.update else 0


if __name__ == "__main__":
    sys.exit(main())
