"""Every report fits the terminal it is drawn in: widths 80, 100 and 160, nothing cut.

Recorded runs (tests/data, run-matrix.json from a real `run --psycopg 3.1.12,3.3.8`)
and hand-made records with what newer runs add (the connect
phase, routes of the user's app, who blocked, the --rtt proxy, timings) are drawn by the
terminal renderer at each width. No line may be wider than the width, no cell may be cut
with an ellipsis, and every verdict word must be whole. The terminal and the Markdown
report must agree on every cell both show.
"""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from geventprobe.compare import compare
from geventprobe.record import (
    BlockedStack,
    ConnectFigures,
    DelayProxyFigures,
    Evidence,
    LatencySummary,
    RouteResult,
    Verdict,
)
from geventprobe.report import comparison, content, load, markdown, terminal, text
from geventprobe.report.document import COMPACT

DATA = Path(__file__).parent / "data"
RECORDED = ["default", "preload", "busy-wait", "preload-http", "matrix"]
WIDTHS = [80, 100, 160]
VERDICT_WORDS = {v.value for v in Verdict}


def recorded(name: str):
    return load.load(str(DATA / f"run-{name}.json"))


def draw(blocks_or_result, width: int, verbose: bool = False) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, force_terminal=False,
                      highlight=False)
    if isinstance(blocks_or_result, list):
        terminal.render_blocks(blocks_or_result, console, verbose)
    else:
        terminal.render(blocks_or_result, console, verbose)
    return out.getvalue()


def with_new_content(result):
    """run-preload with every record a newer run may carry, filled by hand."""
    binary = next(b for b in result.builds if b.build == "binary")
    connect = ConnectFigures(single_ms=4.2, window_ms=33.5, window_factor=7.9,
                             max_hub_lag_ms=31.0, rounds=3, rtt_ms=20.0,
                             window_ms_rounds=[33.5, 30.1, 29.8])
    stack = BlockedStack(phase="waits", count=10, blocked_s=2.9,
                         frames=["gunicorn/workers/ggevent.py:123 in handle",
                                 "app.py:17 in login", "hashlib.pbkdf2_hmac"],
                         user_frame="app.py:17 in login", innermost="hashlib.pbkdf2_hmac")
    burst = LatencySummary(count=64, p50_us=410_000.0, p90_us=600_000.0, p99_us=820_000.0,
                           max_us=830_000.0, mean_us=420_000.0)
    serialized = RouteResult(
        route="GET /orders", verdict=Verdict.SERIALIZED, concurrency=16, lone_ms=25.3,
        lone_status=200, burst=burst, burst_factor=16.2, statuses={"200": 64},
        max_hub_lag_ms=4.0, server_connections=1,
        evidence=[Evidence("route-burst-factor", 16.2, 4.0, True,
                           "16 requests at once took 16.2× the lone request (limit 4×)",
                           phase="route")],
        cause="every greenlet shares one connection (a module-level psycopg.connect)",
        advice="open a connection per request or use psycopg_pool.ConnectionPool")
    failing = dataclasses.replace(
        serialized, route="POST /login", verdict=Verdict.FAILING, burst_factor=None,
        statuses={"500": 60, "timeout": 4}, server_connections=16, cause=None, advice=None,
        first_error="psycopg.OperationalError: connection failed: FATAL: too many clients",
        blocked_by=[dataclasses.replace(stack, phase="route POST /login")])
    evidence = [*binary.evidence,
                Evidence("connect-factor", 7.9, 3.0, True,
                         "16 connects at once took 7.9× one connect (limit 3×)",
                         phase="connect")]
    metrics = dataclasses.replace(binary.metrics, connect=connect)
    binary = dataclasses.replace(
        binary, metrics=metrics, evidence=evidence, blocked_by=[stack],
        routes=[serialized, failing],
        timings={"boot": 1.2, "connect": 0.4, "waits": 2.5, "select1": 3.0, "stop": 0.3})
    proxy = DelayProxyFigures(
        rtt_ms=20.0, upstream="127.0.0.1:5432", connections=48, chunks=12_345,
        extra_delay_us=LatencySummary(count=12_345, p50_us=30.0, p90_us=60.0, p99_us=100.0,
                                      max_us=900.0, mean_us=35.0))
    return dataclasses.replace(
        result, builds=[binary if b.build == "binary" else b for b in result.builds],
        proxy=proxy, timings={"imports": 0.6, "server": 2.1, "build binary": 9.8})


def app_run():
    """run --app with a psycopg2 app: the driver, setup and wait come from the facts."""
    r = with_new_content(recorded("preload"))
    b = next(b for b in r.builds if b.build == "binary")
    facts = {"driver": "psycopg2", "mode": "app",
             "psycopg2": {"version": "2.9.13",
                          "wait_callback": "psycogreen.gevent.gevent_wait_callback"}}
    b = dataclasses.replace(b, build="myproject.wsgi:application", baseline=False,
                            expected=None, facts=facts)
    app = {"app": "myproject.wsgi:application", "chdir": "/srv/myproject",
           "gunicorn_config": "gunicorn.conf.py", "worker_class": "gevent",
           "worker_class_forced": False, "workers": 2, "preload": False,
           "hooks": ["post_fork"], "overrides": ["bind 127.0.0.1:0"]}
    return dataclasses.replace(r, builds=[b], app=app)


def calibrated():
    from test_reports import calibrated as with_calibration

    return with_calibration(recorded("default"))


def matrix_run():
    """A version matrix: the same build at two psycopg releases, told apart at any width."""
    r = recorded("preload")
    old, new = (next(b for b in r.builds if b.build == n) for n in ("binary", "python"))
    rows = [dataclasses.replace(old, versions={"psycopg": "3.1.12", "gevent": "26.9.0"}),
            dataclasses.replace(new, build="binary",
                                versions={"psycopg": "3.3.8", "gevent": "26.9.0"})]
    return dataclasses.replace(r, builds=rows)


CASES = {**{name: (lambda name=name: recorded(name)) for name in RECORDED},
         "new-content": lambda: with_new_content(recorded("preload")),
         "app": app_run, "calibrated": calibrated, "matrix": matrix_run}


def _check(out: str, width: int) -> None:
    for line in out.splitlines():
        assert len(line.rstrip()) <= width, f"wider than {width}: {line!r}"
    assert "…" not in out, out


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("verbose", [False, True])
@pytest.mark.parametrize("case", list(CASES))
def test_every_report_fits_its_width(case, width, verbose):
    result = CASES[case]()
    out = draw(result, width, verbose)
    _check(out, width)
    # every verdict a build or route got is there, whole, as a word
    words = set(re.findall(r"[A-Z][A-Z-]*[A-Z]", out))
    for b in result.builds:
        assert b.verdict.value in words, (b.build, b.verdict)
        for r in b.routes:
            assert r.verdict.value in words
            assert r.route in out
    for cut in ("BLOC ", "BUSY-W ", "UNAVAIL", "INCONCL"):
        assert all(w in VERDICT_WORDS or not w.startswith(cut.strip()) for w in words)


@pytest.mark.parametrize("width", WIDTHS)
def test_the_verdict_table_keeps_build_verdict_and_evidence_whole(width):
    for case in CASES:
        result = CASES[case]()
        out = draw(result, width)
        for b in result.builds:
            names = tuple(n + " " for n in ((content.label(b), content.short_label(b))
                                            if b.versions else (b.build,)))
            row = next((ln for ln in out.splitlines() if ln.startswith(names)), None)
            assert row is not None, (case, width, b.build, out)
            assert content.verdict_label(b).split(" expected")[0] in row
            assert content.deciding(b).split(";")[0] in row or content.num(
                b.metrics and b.metrics.wait_factor, "{:.2f}×") in row, (row, case)


@pytest.mark.parametrize("width", WIDTHS)
def test_matrix_rows_stay_apart(width):
    out = draw(matrix_run(), width)
    assert ("binary @ 3.1.12, 26.9.0" in out or "binary @ psycopg 3.1.12, gevent 26.9.0" in out)
    assert "3.3.8, 26.9.0" in out or "psycopg 3.3.8, gevent 26.9.0" in out


@pytest.mark.parametrize("width", WIDTHS)
def test_compare_and_text_fit(width):
    c = compare(recorded("preload"), recorded("default"))
    _check(draw(comparison.document(c), width), width)
    _check(draw(comparison.document(c), width, verbose=True), width)
    forced = compare(recorded("preload"), recorded("busy-wait"), force=True)
    _check(draw(comparison.document(forced), width), width)


def test_the_text_report_is_100_columns():
    for case in CASES:
        _check(text.render(CASES[case]()), 100)
        _check(text.render(CASES[case](), verbose=True), 100)


def test_80_columns_snapshot():
    """The whole default output of the preload run at 80 columns, as a user sees it."""
    assert [line.rstrip() for line in draw(recorded("preload"), 80).splitlines()] == \
        SNAPSHOT_80.strip("\n").splitlines()


SNAPSHOT_80 = """
geventprobe: PostgreSQL drivers under gunicorn -k gevent
build             driver  wait       verdict     wait×  hub lag ms  CPU/s waits
───────────────────────────────────────────────────────────────────────────────
binary            3.3.8   wait_c     BLOCKING    8.06×     1,212.0        0.003
c                 3.3.8   wait_c     BLOCKING    8.04×     1,206.0        0.001
python            3.3.8   wait_poll  OK          1.02×         2.9        0.066
psycopg2-green †  2.9.13  gevent     OK ✓        1.01×         1.7        0.044
psycopg2 †        2.9.13  none       BLOCKING ✓  8.05×     1,206.7        0.003
† baseline with a known class (psycopg2-green must be OK, psycopg2 BLOCKING).
-v: every figure
binary: BLOCKING
  evidence: 8 concurrent pg_sleep(0.15) took 8.06× w (limit 2×; 8× if they ran
    one at a time)
  evidence: max hub lag during the waits 1212.0 ms (limit 75 ms = 0.5·w)
  cause: psycopg chose wait_c because it was imported before gevent patched
    select (in the gunicorn master: --preload, before the worker patched)
  fix: drop --preload, or patch first: put `from gevent import monkey;
    monkey.patch_all()` at the very top of the gunicorn config file, so the
    master is patched before it imports the app
c: BLOCKING
  evidence: 8 concurrent pg_sleep(0.15) took 8.04× w (limit 2×; 8× if they ran
    one at a time)
  evidence: max hub lag during the waits 1206.0 ms (limit 75 ms = 0.5·w)
  cause: psycopg chose wait_c because it was imported before gevent patched
    select (in the gunicorn master: --preload, before the worker patched)
  fix: drop --preload, or patch first: put `from gevent import monkey;
    monkey.patch_all()` at the very top of the gunicorn config file, so the
    master is patched before it imports the app
psycopg2: BLOCKING (baseline, as expected)
  evidence: 8 concurrent pg_sleep(0.15) took 8.05× w (limit 2×; 8× if they ran
    one at a time)
  evidence: max hub lag during the waits 1206.7 ms (limit 75 ms = 0.5·w)
  cause: psycopg2 has no wait callback, so libpq waits in C and the hub stops
  fix: call psycogreen.gevent.patch_psycopg() in post_worker_init (pip install
    psycogreen)
2 of 3 psycopg 3 builds regressed: binary BLOCKING, c BLOCKING; baselines as
  expected (psycopg2-green OK, psycopg2 BLOCKING); exit 1
"""


def test_new_content_reads_as_a_user_needs_it():
    out = draw(with_new_content(recorded("preload")), 80, verbose=True)
    flat = " ".join(out.split())
    assert "evidence: while connecting: 16 connects at once took 7.9×" in flat
    assert ("who blocked: blocked 10 times, 2.9 s in all: app.py:17 in login → "
            "hashlib.pbkdf2_hmac") in flat
    assert "--rtt: through a delay proxy adding 20 ms RTT (its own extra delay p99 0.1 ms" \
        in flat
    assert "time: boot 1.2 s · connect 0.4 s · waits 2.5 s" in flat
    assert "where the time went: imports 0.6 s · server 2.1 s" in flat
    assert "GET /orders: SERIALIZED" in flat and "POST /login: FAILING" in flat
    assert "first error: psycopg.OperationalError" in flat
    # without -v: no timings, the verdicts and causes stay
    short = " ".join(draw(with_new_content(recorded("preload")), 80).split())
    assert "where the time went" not in short and "cause: every greenlet shares" in short
    md = markdown.render(with_new_content(recorded("preload")))
    assert "### Connect phase" in md and "| binary | 4.2 | 33.5 | 7.9× | 31.0 | 3 |" in md
    assert "| GET /orders | SERIALIZED | 25.3 | 410.0 | 820.0 | ×16.2 | 1 | 200×64 |" in md
    assert "- who blocked: blocked 10 times, 2.9 s in all: app.py:17 in login" in md
    assert "<summary>Where the time went</summary>" in md


@pytest.mark.parametrize("case", list(CASES))
def test_terminal_and_markdown_agree_on_every_cell(case):
    """Both read content.verdict_table: every full-form cell the terminal shows at 160
    columns is the Markdown table's cell, column for column."""
    result = CASES[case]()
    t = content.verdict_table(result)
    headers, rows = markdown.verdict_rows(result)
    md = markdown.render(result)
    for r, row in enumerate(t.rows):
        for col, cell in zip(t.columns, row):
            if col.importance == COMPACT:
                continue
            assert rows[r][headers.index(col.name)] == cell.text
    # The app's psycopg2 row: the driver, its setup and wait callback, from the facts.
    if case == "app":
        assert "| myproject.wsgi:application | psycopg2 2.9.13 | psycogreen | " \
               "psycogreen.gevent.gevent_wait_callback | BLOCKING |" in md
        flat = [" ".join(line.split()) for line in draw(result, 80).splitlines()]
        assert "myproject.wsgi:application 2.9.13 gevent BLOCKING wait× 8.06, hub 1.2 s" \
            in flat


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


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("verbose", [False, True])
def test_bisect_fits(width, verbose):
    from geventprobe.report import bisection

    out = draw(bisection.document(bisected()), width, verbose)
    _check(out, width)
    flat = " ".join(out.split())
    assert "3.1.5 ← first bad" in flat and "3.1.4 ← last good" in flat
    assert ("what changed: the workers' wait function went from wait_selector (3.1.4) to "
            "wait_c (3.1.5)") in flat
    assert "first bad release: psycopg 3.1.5" in flat


def test_html_shows_the_new_content_and_stays_well_formed(monkeypatch):
    from test_reports import _Tags

    from geventprobe.report import charts, html

    monkeypatch.setattr(charts, "available", lambda: False)  # text only: skip drawing
    doc = html.render(with_new_content(recorded("preload")))
    parser = _Tags()
    parser.feed(doc)
    assert parser.stack == []
    assert '<span class="badge SERIALIZED">SERIALIZED</span>' in doc
    assert "<h2>Connect phase</h2>" in doc and "delay proxy adding 20 ms RTT" in doc
    assert "who blocked: blocked 10 times, 2.9 s in all" in doc
