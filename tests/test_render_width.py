"""Every report fits the terminal it is drawn in: widths 80, 100 and 160, nothing cut.

Recorded runs (tests/data) and hand-made records with what the recorded ones lack (a
connect phase that fired, SERIALIZED and FAILING routes, who blocked, the --rtt proxy,
a psycopg2 app, a failed calibration, a matrix row pair) are drawn by the terminal format
at each width. No line may be wider than the width, no cell may be cut with an
ellipsis, and every verdict word must be whole. (The recorded runs' whole outputs are
pinned by the goldens, tests/test_golden.py.)
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
from geventprobe.report import bisection, cells, comparison, load, run
from geventprobe.report.formats import Html, Markdown, Terminal, Text

DATA = Path(__file__).parent / "data"
RECORDED = ["default", "preload", "busy-wait", "preload-http", "matrix", "app-routes",
            "calibrate", "app-causes", "app-cpu"]
WIDTHS = [80, 100, 160]
VERDICT_WORDS = {v.value for v in Verdict}


def recorded(name: str):
    return load.load(str(DATA / f"run-{name}.json"))


def draw(doc_or_result, width: int, verbose: bool = False) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False,
                      highlight=False)
    doc = doc_or_result if hasattr(doc_or_result, "body") else run.document(doc_or_result)
    return Terminal(console).render(doc, verbose)


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
            names = tuple(n + " " for n in ((cells.label(b), cells.short_label(b))
                                            if b.versions else (b.build,)))
            row = next((ln for ln in out.splitlines() if ln.startswith(names)), None)
            assert row is not None, (case, width, b.build, out)
            assert cells.verdict_label(b).split(" expected")[0] in row
            assert cells.deciding(b).split(";")[0] in row or cells.num(
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
        _check(Text().render(run.document(CASES[case]())), 100)
        _check(Text().render(run.document(CASES[case]()), verbose=True), 100)


def test_new_content_reads_as_a_user_needs_it():
    out = draw(with_new_content(recorded("preload")), 80, verbose=True)
    flat = " ".join(out.split())
    assert "evidence: while connecting: 16 connects at once took 7.9×" in flat
    assert ("who blocked: blocked 10 times, 2.9 s in all: app.py:17 in login → "
            "hashlib.pbkdf2_hmac") in flat
    assert "--rtt: through a delay proxy adding 20 ms RTT (its own extra delay p99 0.1 ms" \
        in flat
    assert "binary: boot 1.2 s · connect 0.4 s · waits 2.5 s" in flat
    assert "Where the time went run: imports 0.6 s · server 2.1 s" in flat
    assert "GET /orders: SERIALIZED" in flat and "POST /login: FAILING" in flat
    assert "first error: psycopg.OperationalError" in flat
    # without -v: no timings, the verdicts and causes stay
    short = " ".join(draw(with_new_content(recorded("preload")), 80).split())
    assert "Where the time went" not in short and "cause: every greenlet shares" in short
    md = Markdown().render(run.document(with_new_content(recorded("preload"))))
    assert ("- **connect:** one connection alone 4.2 ms; all at once 33.5 ms (connect× 7.9), "
            "hub late by up to 31 ms, 3 rounds") in md
    assert "| GET /orders | SERIALIZED | 25.3 | 410.0 | 820.0 | ×16.2 | 1 | 200×64 |" in md
    assert "- **who blocked:** blocked 10 times, 2.9 s in all: app.py:17 in login" in md
    assert "<summary>Where the time went</summary>" in md


def test_an_app_row_names_the_driver_its_workers_set_up():
    """run --app with a psycopg2 app: the driver, its setup and wait callback, from the facts."""
    result = app_run()
    md = Markdown().render(run.document(result))
    assert "| myproject.wsgi:application | psycopg2 2.9.13 | psycogreen | " \
           "psycogreen.gevent.gevent_wait_callback | BLOCKING |" in md
    flat = [" ".join(line.split()) for line in draw(result, 80).splitlines()]
    assert "myproject.wsgi:application 2.9.13 gevent BLOCKING wait× 8.06, hub 1.2 s" in flat


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("verbose", [False, True])
def test_bisect_fits(width, verbose):
    from golden import bisected

    out = draw(bisection.document(bisected()), width, verbose)
    _check(out, width)
    flat = " ".join(out.split())
    assert "3.1.5 ← first bad" in flat and "3.1.4 ← last good" in flat
    assert ("what changed: the workers' wait function went from wait_selector (3.1.4) to "
            "wait_c (3.1.5)") in flat
    assert "first bad release: psycopg 3.1.5" in flat


def test_html_shows_the_new_content_and_stays_well_formed(monkeypatch):
    from test_reports import _Tags

    from geventprobe.report import charts

    monkeypatch.setattr(charts, "available", lambda: False)  # text only: skip drawing
    doc = Html().render(run.document(with_new_content(recorded("preload"))))
    parser = _Tags()
    parser.feed(doc)
    assert parser.stack == []
    assert '<span class="badge bad">SERIALIZED</span>' in doc
    assert "<strong>connect:</strong> one connection alone 4.2 ms" in doc
    assert "delay proxy adding 20 ms RTT" in doc
    assert "<strong>who blocked:</strong> blocked 10 times, 2.9 s in all" in doc
