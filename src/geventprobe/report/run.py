"""What a run (or ``calibrate``) says, built once as a ``Document`` every format renders.

The body, in order: the app under test, the calibration controls, the verdict table and
its legend, the delay proxy, the version matrix, the charts, per build its cause and fix
(then its routes), the per-worker figures, where the time went, the notes. The verdict
sentence is the record's summary; the findings paragraph and the appendix (``setup``)
are for the text and reference formats.
"""

from __future__ import annotations

import re

from geventprobe import kinds
from geventprobe.record import RunResult, Verdict
from geventprobe.report import builds, calibration, findings, load, setup
from geventprobe.report.cells import (
    deciding,
    driver_version,
    impl_name,
    label,
    latency_hidden,
    num,
    proxy_line,
    ratio,
    request_cell,
    short_label,
    timings_line,
    verdict_cell,
    wait_name,
    wait_short,
)
from geventprobe.report.document import (
    COMPACT,
    REFERENCE,
    VERBOSE,
    Block,
    Cell,
    Charts,
    Column,
    Document,
    Heading,
    Paragraph,
    Part,
    Table,
)

DRIVERS = "geventprobe: PostgreSQL drivers under gunicorn -k gevent"
APP = "geventprobe: your app under gunicorn -k gevent"
CALIBRATE = "geventprobe calibrate: controls whose class is known"
CHARTS_HINT = ("Charts (hub lag over time, `SELECT 1` latency distribution, every build side by "
               "side): `geventprobe report RESULT.json --format png -o charts.png` (attach the "
               "PNG) or `--format html`; they need matplotlib: `pip install "
               "\"geventprobe[charts]\"`.")


def headline(result: RunResult) -> str:
    """What the report is about: the driver builds, the user's app or celery worker, or the
    controls."""
    if result.calibration is not None and not result.builds:
        return CALIBRATE
    kind = kinds.report_of(result)
    if kind is not None:
        return kind.headline
    return APP if result.app else DRIVERS


def verdict_table(result: RunResult) -> Table:
    """The verdict table: every build's verdict beside its evidence, never latency alone.

    Columns by importance: name, driver, wait function and verdict always; the
    request latency users felt; the evidence figures; then ``SELECT 1`` latency and
    the ratios to the baseline. At 80 columns ``evidence`` stands in for the figures.
    """
    with_requests = any(b.metrics is not None and b.metrics.requests is not None
                        for b in result.builds)
    with_ratios = any(b.metrics is not None and b.metrics.vs_baseline is not None
                      for b in result.builds)
    with_connect = any(b.metrics is not None and b.metrics.connect is not None
                       for b in result.builds)
    columns = [Column("build"), Column("driver"), Column("impl", importance=3),
               Column("wait"), Column("verdict"), Column("evidence", importance=COMPACT),
               Column("wait×", True, 2), Column("hub lag ms", True, 2),
               Column("CPU/s waits", True, 2), Column("runnable", True, 4)]
    if with_connect:
        columns.append(Column("connect×", True, 4))
    columns += [Column("SELECT 1 p50 µs", True, 5), Column("p99 µs", True, 5),
                Column("q/s", True, 5)]
    if with_ratios:
        columns.append(Column("p99 | CPU/q", True, 6))
    if with_requests:
        columns.append(Column("req p99 ms", True, 1))
    rows = []
    for b in result.builds:
        m = b.metrics
        muted = "muted" if latency_hidden(b) else None
        name = label(b) + (" †" if b.baseline else "")
        row = [Cell(name, "strong", short_label(b) + (" †" if b.baseline else "")
                    if b.versions else None),
               Cell(driver_version(b), None, driver_version(b).split(" ")[-1]),
               Cell(impl_name(b)), Cell(wait_name(b), None, wait_short(b)), verdict_cell(b),
               Cell(deciding(b), None, deciding(b).split(";")[0]),
               Cell(num(m and m.wait_factor, "{:.2f}×")),
               Cell(num(m and m.max_hub_lag_ms, "{:,.1f}")),
               Cell(num(m and m.cpu_during_waits, "{:.3f}")),
               Cell(num(m and m.runnable_during_waits, "{:.0%}"))]
        if with_connect:
            c = m.connect if m is not None else None
            row.append(Cell(num(c and c.window_factor, "{:.1f}×")))
        row += [Cell(num(m and m.select1.p50_us), muted),
                Cell(num(m and m.select1.p99_us), muted),
                Cell(num(m and m.select1_qps), muted)]
        if with_ratios:
            v = m.vs_baseline if m is not None else None
            row.append(Cell("–" if v is None else f"{ratio(v.p99)} | {ratio(v.cpu_per_query)}"))
        if with_requests:
            row.append(request_cell(b))
        rows.append(row)
    caption = None if not any(b.baseline for b in result.builds) else (
        "† baseline with a known class (psycopg2-green must be OK, psycopg2 BLOCKING)")
    return Table(columns, rows, caption=caption)


def legend(result: RunResult) -> str | None:
    """What the verdict table's columns mean, with this run's workload (one paragraph)."""
    m = next((b.metrics for b in result.builds if b.metrics), None)
    if m is None:
        return None
    g, w = m.greenlets, m.wait_seconds
    text = (f"{m.workers} workers × {g} greenlets per build. **wait×** = wall time of {g} "
            f"concurrent pg_sleep({w:g}) / w (1× = they overlap, {g}× = one at a time). "
            "**hub lag** = latest heartbeat during the waits. **CPU/s waits** = worker CPU-s "
            "per wall-s while the server slept; **runnable** = share of that time on a CPU or "
            "waiting for one. SELECT 1 latency alone cannot show blocking: a blocked hub runs "
            "one query at a time, so each looks fast (de-emphasised for a BLOCKING build).")
    r = next((b.metrics.requests for b in result.builds
              if b.metrics is not None and b.metrics.requests is not None), None)
    if r is not None:
        text += (f" **req p99** = HTTP requests at {r.path} in the same workers, {r.rate:g}/s "
                 f"open loop, each running {r.query}, timed from when each was due (queueing "
                 "included).")
    return text


def app_lines(result: RunResult) -> list[Block]:
    """``run --app``: the deployment that was probed, and what geventprobe changed in it."""
    a = result.app
    if not a:
        return []
    config = a.get("gunicorn_config") or "no gunicorn config file"
    worker = (f"worker class {a.get('worker_class')}"
              + (f" (forced: yours is {a.get('their_worker_class')})"
                 if a.get("worker_class_forced") else " (yours)"))
    out: list[Block] = [
        Paragraph(f"{a.get('app')} in {a.get('chdir')}", lead="your app:"),
        Paragraph(f"{config}; {worker}; {a.get('workers')} workers; preload "
                  f"{'on' if a.get('preload') else 'off'}; hooks: "
                  f"{', '.join(a.get('hooks') or []) or 'none'}", indent=1)]
    if a.get("gunicorn_cmd_args"):
        out.append(Paragraph(f"GUNICORN_CMD_ARGS: {a['gunicorn_cmd_args']}", indent=1))
    found = a.get("routes_found")
    if found:
        out.append(Paragraph(found_routes(found, result), indent=1))
    out += [Paragraph(f"geventprobe set {o}", style="dim", indent=1)
            for o in a.get("overrides") or []]
    return out


def found_routes(found: dict, result: RunResult) -> str:
    """``--route auto``: what was found and probed, what was skipped and why, what
    ``--route-exclude`` dropped; a found route that answered 401/403 or a redirect is said
    to need a login (requests carry no cookies), since its figures are that answer's."""
    answered = {r.route: r for b in result.builds for r in b.routes}

    def shown(route: str) -> str:
        r = answered.get(route)
        status = r.lone_status if r is not None else None
        if status in (401, 403):
            return f"{route} (needs a login: answered {status})"
        if status is not None and 300 <= status < 400:
            to = re_location(r.note)
            login = to is not None and any(w in to.lower() for w in ("login", "signin",
                                                                      "sign-in", "auth"))
            return (f"{route} ({'needs a login: ' if login else ''}redirected"
                    f"{f' to {to}' if to else ''})")
        return route

    where = {"django": "the Django URLconf", "flask": "the Flask url_map"}.get(
        found.get("framework"), "the app")
    text = (f"routes found in {where}: "
            + (", ".join(shown(r) for r in found.get("found") or []) or "none to probe"))
    skipped = found.get("skipped") or []
    if skipped:
        # In backticks: a pattern's <int:pk> is not HTML in Markdown.
        text += "; skipped: " + ", ".join(f"`{s['route']}` ({s['reason']})" for s in skipped)
    if found.get("excluded"):
        text += f"; excluded by --route-exclude: {', '.join(found['excluded'])}"
    return text


def re_location(note: str | None) -> str | None:
    """Where a route's redirect went, from its note (``...answered 302 Found to /login/:``)."""
    m = re.search(r" to (\S+?):? requests carry", note or "")
    return m.group(1) if m else None


def matrix_lines(result: RunResult) -> list[Block]:
    """Version matrix: each environment, whether it was reused from the cache, what it holds."""
    envs = result.matrix or []
    reused = sum(e.cached for e in envs)
    out: list[Block] = [Paragraph(f"version matrix: {len(envs)} isolated environment(s), "
                                  f"{reused} reused from the cache", style="strong")]
    for e in envs:
        if e.error:
            text = f"UNAVAILABLE: {e.error}"
        else:
            held = ", ".join(f"{k} {v}" for k, v in e.installed.items()
                             if k in ("psycopg", "psycopg-binary", "psycopg-c", "psycopg2-binary",
                                      "psycogreen", "gevent", "greenlet", "gunicorn"))
            state = "cached" if e.cached else f"created in {e.seconds:.1f} s"
            text = f"{state} with {e.installer}: {held} ({e.path})"
        out.append(Paragraph(text, lead=f"{e.label}:", indent=1))
        out += [Paragraph(reason, lead=f"{build} UNAVAILABLE:", style="dim", indent=1)
                for build, reason in e.missing.items()]
    return out


def worker_table(b) -> Table:
    """Each worker's own figures (the build's are its worst worker's)."""
    columns = [Column("worker pid")] + [Column(n, True) for n in (
        "wait× per window", "hub lag ms", "CPU/s waits", "SELECT 1 p50 µs", "p99 µs", "q/s",
        "CPU/query µs")]
    rows = [[Cell(str(w.pid)), Cell(", ".join(f"{f:.2f}" for f in w.wait_factors)),
             Cell(num(w.max_hub_lag_ms, "{:,.1f}")), Cell(num(w.cpu_during_waits, "{:.3f}")),
             Cell(num(w.select1.p50_us)), Cell(num(w.select1.p99_us)),
             Cell(num(w.select1_qps)), Cell(num(w.cpu_per_query_us, "{:,.1f}"))]
            for w in b.workers]
    return Table(columns, rows, title=label(b))


def _charts(result: RunResult) -> Charts:
    drawn = [b for b in result.builds if b.metrics is not None and b.workers]
    thresholds = (result.profile or {}).get("thresholds") or {}
    return Charts(drawn, thresholds.get("blocking_hub_lag_fraction"), result.started_at,
                  hint=CHARTS_HINT)


def body(result: RunResult) -> list[Block]:
    """Everything below the headline, in the order every format shows it."""
    if result.calibration is not None and not result.builds:  # `geventprobe calibrate`
        return [calibration.table(result.calibration, title=None)]
    kind = kinds.report_of(result)  # a kind of worker's own sections, else the WSGI ones
    out: list[Block] = kind.deployment(result) if kind else app_lines(result)
    if result.calibration is not None:
        cal = result.calibration
        out += [calibration.table(cal),
                Paragraph(calibration.outcome(cal), style=calibration.style(cal))]
    out.append(kind.table(result) if kind else verdict_table(result))
    text = kind.legend(result) if kind else legend(result)
    if text:
        out.append(Paragraph(text, style="dim", detail=VERBOSE))
    if result.proxy is not None:
        out.append(Paragraph(proxy_line(result.proxy), lead="--rtt:"))
    if result.matrix:
        out += matrix_lines(result)
    charts = _charts(result)
    if charts.builds:
        out += [Heading("Charts", level=2, detail=REFERENCE), charts]
    per_build = [block for b in result.builds for block in builds.details(b, kind)]
    if per_build:
        title = ("Causes and fixes" if any(builds.wanted(b) for b in result.builds)
                 else "Connect phase")
        out += [Heading(title, level=2, detail=REFERENCE), *per_build]
    workers = [worker_table(b) for b in result.builds if b.workers]
    if workers:
        out.append(Part("Per-worker figures", workers, collapsed=True, detail=REFERENCE))
    times = ([Paragraph(timings_line(result.timings), lead="run:", indent=1)]
             if result.timings else [])
    times += [Paragraph(timings_line(b.timings), lead=f"{label(b)}:", indent=1)
              for b in result.builds if b.timings]
    if times:
        out.append(Part("Where the time went", times, collapsed=True, detail=VERBOSE))
    out += [Paragraph(n, lead="note:", style="warn") for n in result.notes]
    return out


def document(result: RunResult, exit_code: int | None = None) -> Document:
    """What ``geventprobe run`` (or ``calibrate``) reports, once, for every format.

    ``exit_code``: what the command exits with when that is not the run's own (an output
    file that could not be written: 2); None: the run's.
    """
    result = load.normalize(result)
    code = result.exit_code if exit_code is None else exit_code
    faults = any(b.verdict in (Verdict.BLOCKING, Verdict.BUSY_WAIT, Verdict.ERROR)
                 and not b.baseline for b in result.builds) or code != 0
    # A record written before the verdict was kept apart has it only in ``summary``.
    verdict, shown_code = (result.verdict, code) if result.verdict else (result.summary, None)
    return Document(headline=headline(result), verdict=verdict,
                    findings=findings.paragraph(result), body=body(result),
                    appendix=setup.appendix(result), footer=setup.footer(result),
                    failed=faults, exit_code=shown_code)
