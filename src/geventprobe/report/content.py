"""What a run, a calibration, a comparison or a bisect says, built once as a ``document``.

The one set of cell helpers (driver version, implementation, wait function, verdict
label) and the tables and sentences every format shows: the terminal draws them at
its width, Markdown and HTML add their syntax. Nothing here knows a format.
"""

from __future__ import annotations

from collections.abc import Sequence

from geventprobe.record import (
    BlockedStack,
    BuildResult,
    Calibration,
    ConnectFigures,
    DelayProxyFigures,
    RouteResult,
    RunResult,
    Verdict,
)
from geventprobe.report.document import (
    COMPACT,
    Block,
    Cell,
    Column,
    Heading,
    Paragraph,
    Section,
    Table,
)

VERDICT_STYLE = {
    Verdict.OK: "ok", Verdict.BLOCKING: "bad", Verdict.BUSY_WAIT: "busy",
    Verdict.ERROR: "warn", Verdict.UNAVAILABLE: "dim", Verdict.INCONCLUSIVE: "warn",
    Verdict.SERIALIZED: "bad", Verdict.FAILING: "bad",
}


# ---------------------------------------------------------------- cells


def num(value: float | None, fmt: str = "{:,.0f}") -> str:
    """A figure, or an en dash when there is none."""
    return "–" if value is None else fmt.format(value)


def label(b: BuildResult) -> str:
    """The build's name, with its versions when it is a row of a version matrix."""
    versions = b.versions
    if not versions:
        return b.build
    # The matrix's axes (--psycopg, --gevent); any other pin only when those are absent.
    shown = {k: v for k, v in versions.items() if k in ("psycopg", "gevent")} or versions
    return f"{b.build} @ " + ", ".join(f"{k} {v}" for k, v in shown.items())


def short_label(b: BuildResult) -> str:
    """A matrix row's name for a narrow layout: ``binary @ 3.1.12, 26.9.0`` (the axes'
    versions, in the order ``label`` names them)."""
    versions = b.versions or {}
    shown = [v for k, v in versions.items() if k in ("psycopg", "gevent")]
    return f"{b.build} @ {', '.join(shown)}" if shown else label(b)


def _psycopg2(b: BuildResult) -> bool:
    """True when the row's driver is psycopg2 (a psycopg2 build, or an app that uses it)."""
    return b.build.startswith("psycopg2") or b.facts.get("driver") == "psycopg2"


def driver_version(b: BuildResult) -> str:
    """``psycopg 3.3.8`` or ``psycopg2 2.9.13``, as the workers imported it.

    A matrix row that did not run (UNAVAILABLE) has no facts: the version it asked for.
    """
    key = "psycopg2" if _psycopg2(b) else "psycopg"
    asked = (b.versions or {}).get("psycopg2-binary" if key == "psycopg2" else key)
    version = (b.facts.get(key) or {}).get("version") or asked
    return f"{key} {version}" if version else "–"


def impl_name(b: BuildResult) -> str:
    """psycopg's implementation, or the psycopg2 setup (psycogreen, a callback, plain)."""
    if b.build.startswith("psycopg2"):
        return "psycogreen" if b.build == "psycopg2-green" else "plain"
    if _psycopg2(b):  # run --app: what the user's workers set up, from the facts
        cb = (b.facts.get("psycopg2") or {}).get("wait_callback") or ""
        return "psycogreen" if cb.startswith("psycogreen") else "callback" if cb else "plain"
    return (b.facts.get("psycopg") or {}).get("impl") or "–"


def wait_name(b: BuildResult) -> str:
    """psycopg's wait function, or psycopg2's wait callback, as the workers reported it."""
    if _psycopg2(b):
        if not b.facts:
            return "–"
        callback = (b.facts.get("psycopg2") or {}).get("wait_callback")
        return callback or "no wait callback"
    return (b.facts.get("psycopg") or {}).get("wait") or "–"


def wait_short(b: BuildResult) -> str | None:
    """A narrow layout's wait name: ``gevent`` for ``psycogreen.gevent.gevent_wait_callback``,
    ``none`` for no callback (None: the full name is short already)."""
    name = wait_name(b)
    if name == "no wait callback":
        return "none"
    if "." in name:
        return name.rsplit(".", 1)[-1].replace("_wait_callback", "")
    return None


def verdict_label(b: BuildResult) -> str:
    """The verdict, with whether a baseline got its known class."""
    text = b.verdict.value
    if b.baseline and b.verdict not in (Verdict.UNAVAILABLE, Verdict.ERROR):
        text += " ✓" if b.verdict.value == b.expected else f" ✗ expected {b.expected}"
    return text


def _verdict_cell(b: BuildResult) -> Cell:
    text = verdict_label(b)
    short = text.split(" expected")[0] if " expected" in text else None
    return Cell(text, VERDICT_STYLE[b.verdict], short)


def duration(ms: float | None) -> str:
    """``12 ms``, ``1.2 s``: a lag or a latency in the unit a reader takes in at a glance."""
    if ms is None:
        return "–"
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:,.0f} ms" if ms >= 10 else \
        f"{ms:.1f} ms"


def deciding(b: BuildResult) -> str:
    """The deciding evidence in a few words: ``wait× 8.06, hub 1.2 s``."""
    m = b.metrics
    if b.verdict is Verdict.UNAVAILABLE:
        return "not installed here"
    if m is None:
        return "probe failed" if b.verdict is Verdict.ERROR else "–"
    fired = {e.rule for e in b.evidence if e.fired}
    connect = [e for e in b.evidence if e.fired and e.phase == "connect"]
    stall = (f"hub stalled {m.connect.stall_share:.0%} of connects"
             if connect and m.connect is not None and m.connect.stall_share is not None
             else None)
    if b.verdict is Verdict.BUSY_WAIT or fired & {"cpu-during-waits", "runnable-during-waits"}:
        text = f"CPU {num(m.cpu_during_waits, '{:.2f}')}/s in waits"
    elif stall and not fired & {"wait-factor", "hub-lag"}:
        return stall  # only connection setup blocked: the waits' figures would say OK
    else:
        text = f"wait× {m.wait_factor:.2f}, hub {duration(m.max_hub_lag_ms)}"
    if stall:
        text += f"; {stall}"
    if b.worker_timeouts:
        text += f"; {b.worker_timeouts} killed"
    return text


def request_cell(b: BuildResult) -> Cell:
    """HTTP request latency at the probe route: p99 in ms, and errors if any (the short form,
    for a narrow layout, in whole ms)."""
    r = b.metrics.requests if b.metrics is not None else None
    if r is None:
        return Cell("–")
    ms = r.latency.p99_us / 1000 if r.latency.p99_us is not None else None
    short = num(ms, "{:,.0f}") + (f" ({r.errors} err)" if r.errors else "")
    return Cell(num(ms, "{:,.1f}") + (f" ({r.errors} errors)" if r.errors else ""),
                "bad" if b.verdict is Verdict.BLOCKING else None, short)


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"×{value:.2f}"


# ---------------------------------------------------------------- the run


def latency_hidden(b: BuildResult) -> bool:
    """True when the build's ``SELECT 1`` figures mislead: a blocked hub looks fast."""
    return b.verdict is Verdict.BLOCKING


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
               Cell(impl_name(b)), Cell(wait_name(b), None, wait_short(b)), _verdict_cell(b),
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
            row.append(Cell("–" if v is None else f"{_ratio(v.p99)} | {_ratio(v.cpu_per_query)}"))
        if with_requests:
            row.append(request_cell(b))
        rows.append(row)
    title = ("geventprobe: your app under gunicorn -k gevent" if result.app else
             "geventprobe: PostgreSQL drivers under gunicorn -k gevent")
    caption = None if not any(b.baseline for b in result.builds) else (
        "† baseline with a known class (psycopg2-green must be OK, psycopg2 BLOCKING)")
    return Table(columns, rows, title=title, caption=caption)


def table_legend(result: RunResult) -> str | None:
    """What the verdict table's columns mean, with this run's workload (one paragraph)."""
    m = next((b.metrics for b in result.builds if b.metrics), None)
    if m is None:
        return None
    g, w = m.greenlets, m.wait_seconds
    text = (f"{m.workers} workers × {g} greenlets. wait× = wall time of {g} concurrent "
            f"pg_sleep({w:g}) / w (1× = they overlap, {g}× = one at a time). hub lag = latest "
            "heartbeat during the waits. CPU/s waits = worker CPU-s per wall-s while the "
            "server slept; runnable = share of that time on a CPU or waiting for one. "
            "SELECT 1 latency alone cannot show blocking: a blocked hub runs one query at a "
            "time, so each looks fast.")
    r = next((b.metrics.requests for b in result.builds
              if b.metrics is not None and b.metrics.requests is not None), None)
    if r is not None:
        text += (f" req p99 = HTTP requests at {r.path} in the same workers, {r.rate:g}/s "
                 f"open loop, each running {r.query}, timed from when each was due (queueing "
                 "included).")
    return text


def _evidence_text(e) -> str:
    return f"while connecting: {e.text}" if e.phase == "connect" else e.text


def blocked_line(s: BlockedStack) -> str:
    """``blocked 10 times, 2.9 s in all: app.py:17 in login → hashlib.pbkdf2_hmac``."""
    where = s.user_frame or (s.frames[-1] if s.frames else "?")
    text = f"blocked {s.count} time{'s' if s.count != 1 else ''}, {s.blocked_s:.1f} s in all"
    if s.phase and s.phase != "waits":
        text += " while connecting" if s.phase == "connect" else f" ({s.phase})"
    text += f": {where}"
    if s.innermost and s.innermost != where:
        text += f" → {s.innermost}"
    return text


def connect_line(c: ConnectFigures) -> str:
    """The connect phase in one sentence."""
    share = "" if c.stall_share is None else f", the hub stalled for {c.stall_share:.0%} of it"
    text = (f"one connection alone {c.single_ms:,.1f} ms; all at once {c.window_ms:,.1f} ms "
            f"(connect× {c.window_factor:.1f}){share}, hub late by up to "
            f"{duration(c.max_hub_lag_ms)}, {c.rounds} round"
            f"{'s' if c.rounds != 1 else ''}")
    if c.rtt_ms:
        text += f", through {c.rtt_ms:g} ms of added RTT"
    return text


def proxy_line(p: DelayProxyFigures) -> str:
    """``--rtt``: what the delay proxy added, and its own extra delay."""
    extra = p.extra_delay_us.p99_us
    return (f"through a delay proxy adding {p.rtt_ms:g} ms RTT (its own extra delay p99 "
            f"{num(extra and extra / 1000, '{:.1f}')} ms; {p.connections} connections, "
            f"{p.chunks:,} chunks)")


def timings_line(timings: dict[str, float]) -> str:
    """``where the time went: boot 1.2 s · connect 0.4 s · ...``."""
    return " · ".join(f"{k} {v:.1f} s" for k, v in timings.items())


def explanation(b: BuildResult) -> list[Block]:
    """One build's rules that fired (with their numbers and phase), its cause and its fix."""
    lines: list[Block] = [Paragraph(_evidence_text(e), lead="evidence:", indent=1)
                          for e in b.evidence if e.fired]
    if b.error and b.verdict is Verdict.ERROR:
        lines.append(Paragraph(b.error, lead="error:", indent=1))
    if b.cause:
        lines.append(Paragraph(b.cause, lead="cause:", indent=1))
    if b.advice:
        lines.append(Paragraph(b.advice, lead="fix:", indent=1))
    if b.verdict is Verdict.UNAVAILABLE and b.install:
        lines.append(Paragraph(f"`{b.install}`", lead="install:", indent=1))
    lines += [Paragraph(blocked_line(s), lead="who blocked:", indent=1) for s in b.blocked_by]
    if b.worker_timeouts:
        lines.append(Paragraph(f"gunicorn killed {b.worker_timeouts} worker(s) for a blocked "
                               "hub (WORKER TIMEOUT)", indent=1))
    return lines


def route_table(routes: Sequence[RouteResult]) -> Table:
    """``run --app --route``: a lone request, then a burst, per route."""
    columns = [Column("route"), Column("verdict"), Column("lone ms", True, 2),
               Column("burst p50 ms", True, 3), Column("p99 ms", True, 3),
               Column("×factor", True, 1), Column("server conns", True, 4),
               Column("statuses", importance=2, wrap=True)]
    rows = []
    for r in routes:
        p50, p99 = r.burst.p50_us, r.burst.p99_us
        statuses = ", ".join(f"{k}×{v}" for k, v in r.statuses.items()) or "–"
        rows.append([Cell(r.route, "strong"),
                     Cell(r.verdict.value, VERDICT_STYLE[r.verdict]),
                     Cell(num(r.lone_ms, "{:,.1f}")),
                     Cell(num(p50 and p50 / 1000, "{:,.1f}")),
                     Cell(num(p99 and p99 / 1000, "{:,.1f}")),
                     Cell(num(r.burst_factor, "×{:.1f}")),
                     Cell(num(r.server_connections, "{:d}")),
                     Cell(statuses)])
    conc = routes[0].concurrency if routes else 0
    return Table(columns, rows, title="your app's routes: one request alone, then a burst",
                 caption=f"×factor = burst p90 / the lone request ({conc} at once per worker: "
                         f"about 1 when they overlap, about {conc} when they run one at a "
                         "time); server conns = most connections one worker held")


def route_details(routes: Sequence[RouteResult]) -> list[Block]:
    """Each route that is not OK: its evidence, cause, fix, first error and who blocked."""
    out: list[Block] = []
    for r in routes:
        if r.verdict is Verdict.OK:
            continue
        out.append(Heading(f"{r.route}: {r.verdict.value}", VERDICT_STYLE[r.verdict]))
        out += [Paragraph(e.text, lead="evidence:", indent=1) for e in r.evidence if e.fired]
        if r.cause:
            out.append(Paragraph(r.cause, lead="cause:", indent=1))
        if r.advice:
            out.append(Paragraph(r.advice, lead="fix:", indent=1))
        if r.first_error:
            out.append(Paragraph(r.first_error, lead="first error:", indent=1))
        out += [Paragraph(blocked_line(s), lead="who blocked:", indent=1) for s in r.blocked_by]
    return out


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
    out += [Paragraph(f"geventprobe set {o}", style="dim", indent=1)
            for o in a.get("overrides") or []]
    return out


def matrix_lines(result: RunResult) -> list[Block]:
    """Version matrix: each environment, whether it was reused from the cache, what it holds."""
    envs = result.matrix or []
    reused = sum(e.cached for e in envs)
    out: list[Block] = [Heading(f"version matrix: {len(envs)} isolated environment(s), "
                                f"{reused} reused from the cache")]
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


def details(result: RunResult) -> list[Block]:
    """Per build that is not OK (or has routes, connect figures, stacks): why, and the fix."""
    out: list[Block] = []
    for b in result.builds:
        m = b.metrics
        connect = m.connect if m is not None else None
        if b.verdict is Verdict.OK and not (b.routes or b.blocked_by):
            if connect is not None:
                out.append(Paragraph(connect_line(connect), lead=f"{label(b)} connect:",
                                     verbose=True))
            if b.timings:
                out.append(Paragraph(timings_line(b.timings), lead=f"{label(b)} time:",
                                     verbose=True))
            continue
        head = f"{label(b)}: {b.verdict.value}"
        if b.baseline and b.verdict.value == b.expected:
            head += " (baseline, as expected)"
        out.append(Heading(head, VERDICT_STYLE[b.verdict]))
        out += explanation(b)
        if connect is not None:
            out.append(Paragraph(connect_line(connect), lead="connect:", indent=1,
                                 verbose=not any(e.fired and e.phase == "connect"
                                                 for e in b.evidence)))
        if b.timings:
            out.append(Paragraph(timings_line(b.timings), lead="time:", indent=1, verbose=True))
        if b.routes:
            out.append(route_table(b.routes))
            out += route_details(b.routes)
    return out


def calibration_table(cal: Calibration) -> Table:
    """Control → expected → got, with the figures each was judged on."""
    columns = [Column("control"), Column("build", importance=3), Column("expected"),
               Column("got"), Column("evidence", importance=COMPACT),
               Column("wait×", True, 2), Column("hub lag ms", True, 2),
               Column("CPU/s waits", True, 2), Column("runnable", True, 4),
               Column("other load", True, 3), Column("margin", True, 1)]
    rows = []
    for o in cal.outcomes:
        mark = {True: " ✓", False: " ✗"}.get(o.passed, "")
        style = "ok" if o.passed else "bad" if o.passed is False else "dim"
        if o.expected == Verdict.BUSY_WAIT.value:
            compact = f"CPU {num(o.cpu_during_waits, '{:.2f}')}/s"
        else:
            compact = (f"wait× {num(o.wait_factor, '{:.2f}')}, hub "
                       f"{duration(o.max_hub_lag_ms)}")
        rows.append([Cell(o.control, "strong"), Cell(o.build), Cell(o.expected),
                     Cell(o.got + mark, style), Cell(compact),
                     Cell(num(o.wait_factor, "{:.2f}×")),
                     Cell(num(o.max_hub_lag_ms, "{:,.1f}")),
                     Cell(num(o.cpu_during_waits, "{:.3f}")),
                     Cell(num(o.runnable_during_waits, "{:.0%}")),
                     Cell(num(o.foreign_busy, "{:.0%}")), Cell(num(o.margin, "{:.1f}×"))])
    return Table(columns, rows, title="calibration: controls whose class is known",
                 caption="margin = deciding figure / its threshold for a fault, threshold / "
                         "closest figure for OK (>1 is on the right side)")


def calibration_word(cal: Calibration) -> str:
    """PASSED, FAILED or INCONCLUSIVE."""
    return "PASSED" if cal.passed else "INCONCLUSIVE" if cal.saturated else "FAILED"


def calibration_blocks(cal: Calibration) -> list[Block]:
    """The calibration table and its one-line outcome."""
    style = "ok" if cal.passed else "warn" if cal.saturated else "bad"
    return [calibration_table(cal),
            Paragraph(f"calibration {calibration_word(cal)}: {cal.reason}", style=style)]


def run_document(result: RunResult) -> list[Block]:
    """What ``geventprobe run`` (or ``calibrate``) prints, as a document."""
    if result.calibration is not None and not result.builds:  # `geventprobe calibrate`
        return [calibration_table(result.calibration),
                Paragraph(result.summary, style="strong")]
    out: list[Block] = []
    if result.calibration is not None:
        out += calibration_blocks(result.calibration)
    out += app_lines(result)
    out.append(verdict_table(result))
    legend = table_legend(result)
    if legend:
        out.append(Paragraph(legend, style="dim", verbose=True))
    if result.proxy is not None:
        out.append(Paragraph(proxy_line(result.proxy), lead="--rtt:"))
    if result.matrix:
        out += matrix_lines(result)
    out += details(result)
    if result.timings:
        out.append(Paragraph(timings_line(result.timings), lead="where the time went:",
                             style="dim", verbose=True))
    out += [Paragraph(n, lead="note:", style="warn") for n in result.notes]
    out.append(Paragraph(result.summary, style="strong"))
    return out


def section(title: str | None, blocks: list[Block]) -> Section:
    """A titled group, for formats that show headings."""
    return Section(title, blocks)
