"""The Markdown report: what a maintainer needs to act on an issue without asking again.

GitHub-flavoured Markdown, from the saved record only (``report`` re-renders a
run byte for byte). In order: a one-paragraph verdict, the verdict table with
its evidence figures, cause and fix per build, the facts the workers reported
about themselves (see docs/field-facts.md), the machine and the PostgreSQL server, the
exact command and profile, calibration, notes and, for each build that blocked
or busy-waited, a self-contained reproduction script.

The tables and cells come from ``content`` (the same the terminal draws), so the
formats cannot disagree; the section builders here (``verdict_paragraph``,
``worker_fact_rows``...) return plain data that ``html`` and ``text`` format too.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Sequence

from geventprobe.core.rules import baseline_mismatches
from geventprobe.files import write_atomic
from geventprobe.record import BuildResult, RunResult, Verdict
from geventprobe.report import repro
from geventprobe.report.content import (  # noqa: F401  (the one set of cell helpers)
    blocked_line,
    connect_line,
    driver_version,
    impl_name,
    label,
    latency_hidden,
    num,
    proxy_line,
    route_table,
    timings_line,
    verdict_label,
    verdict_table,
    wait_name,
)
from geventprobe.report.document import COMPACT, Table

# GitHub rejects a job summary over 1 MiB (per step): stay well under it.
STEP_SUMMARY_LIMIT = 1024 * 1024
CHARTS_HINT = ("Charts (hub lag over time, `SELECT 1` latency distribution, every build side by "
               "side): `geventprobe report RESULT.json --format png -o charts.png` (attach the "
               "PNG) or `--format html`; they need matplotlib: `pip install "
               "\"geventprobe[charts]\"`.")
Rows = tuple[list[str], list[list[str]]]


# ---------------------------------------------------------------- shared content


def script_name(b: BuildResult) -> str:
    """The file name a build's reproduction script is shown under."""
    return "repro_" + re.sub(r"[^\w.-]+", "_", label(b)).strip("_") + ".py"


def _names(builds: Sequence[BuildResult]) -> str:
    names = [label(b) for b in builds]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _verb(builds: Sequence[BuildResult], singular: str, plural: str) -> str:
    return singular if len(builds) == 1 else plural


def table_data(t: Table) -> tuple[list[str], list[list[str]], list[int], set[tuple[int, int]]]:
    """A document table as Markdown and HTML show it: every column but the compact one.

    Returns headers, rows of cell texts, the right-aligned column indexes, and the
    (row, column) cells that mislead and are shown de-emphasised.
    """
    shown = [i for i, c in enumerate(t.columns) if c.importance != COMPACT]
    headers = [t.columns[i].name for i in shown]
    rows = [[row[i].text for i in shown] for row in t.rows]
    right = [n for n, i in enumerate(shown) if t.columns[i].right]
    muted = {(r, n) for r, row in enumerate(t.rows) for n, i in enumerate(shown)
             if row[i].style == "muted"}
    return headers, rows, right, muted


def _shape(result: RunResult) -> tuple[int, int, float] | None:
    m = next((b.metrics for b in result.builds if b.metrics), None)
    if m is not None:
        return m.workers, m.greenlets, m.wait_seconds
    w = (result.profile or {}).get("workload") or {}
    if {"workers", "greenlets", "wait_seconds"} <= set(w):
        return w["workers"], w["greenlets"], w["wait_seconds"]
    return None


def _worst(builds: Sequence[BuildResult], attr: str) -> float | None:
    values = [getattr(b.metrics, attr) for b in builds
              if b.metrics is not None and getattr(b.metrics, attr) is not None]
    return max(values) if values else None


def _versions(result: RunResult) -> str:
    """The versions that matter, as the workers reported them (the parent's as a fallback)."""
    facts = next((b.facts for b in result.builds if b.facts.get("psycopg")), None) or \
        next((b.facts for b in result.builds if b.facts), {})
    pkgs = (result.environment or {}).get("packages") or {}
    parts = []

    def seen(get) -> str | None:
        # A version matrix runs several versions: name them all, in the order they ran.
        found = list(dict.fromkeys(v for v in (get(b.facts) for b in result.builds) if v))
        return "/".join(found) if found else None

    psycopg = seen(lambda f: (f.get("psycopg") or {}).get("version")) or pkgs.get("psycopg")
    if psycopg:
        parts.append(f"psycopg {psycopg}")
    for name in ("gevent", "greenlet", "gunicorn"):
        version = seen(lambda f, name=name: f.get(name)) or pkgs.get(name)
        if version:
            parts.append(f"{name} {version}")
    python = facts.get("python") or (result.environment or {}).get("python")
    if python:
        parts.append(f"Python {python}")
    server = (result.server or {}).get("version")
    if server:
        parts.append(f"PostgreSQL {server.split()[0]}")
    env = result.environment or {}
    machine = " ".join(str(x) for x in (env.get("machine"),) if x)
    if env.get("kernel") or machine:
        system = (env.get("os") or "").split("-")[0] or "OS"
        parts.append(f"{system} {env.get('kernel', '')} {machine}".strip()
                     + (f", {env['cpu_count']} CPUs" if env.get("cpu_count") else ""))
    return ", ".join(parts)


def verdict_paragraph(result: RunResult) -> str:
    """One paragraph: what was found, the evidence, the cause, whether the detector was live."""
    if not result.builds:  # `geventprobe calibrate`: the controls are the whole story
        return calibration_status(result)
    tested = [b for b in result.builds if not b.baseline and b.verdict is not Verdict.UNAVAILABLE]
    blocking = [b for b in tested if b.verdict is Verdict.BLOCKING]
    busy = [b for b in tested if b.verdict is Verdict.BUSY_WAIT]
    ok = [b for b in tested if b.verdict is Verdict.OK]
    errors = [b for b in result.builds if b.verdict is Verdict.ERROR]
    missed = baseline_mismatches(result.builds)
    shape = _shape(result)
    g, w = (shape[1], shape[2]) if shape else (None, None)
    out: list[str] = []
    if missed:
        out.append("**INCONCLUSIVE**: baseline " + ", ".join(
            f"{label(b)} got {b.verdict.value} instead of {b.expected}" for b in missed)
            + ", so the detector is not seeing what it should and no verdict of this run can "
            "be trusted.")
    if blocking:
        factor, lag = _worst(blocking, "wait_factor"), _worst(blocking, "max_hub_lag_ms")
        out.append(
            f"**psycopg 3 {_names(blocking)} {_verb(blocking, 'BLOCKS', 'BLOCK')} the gevent "
            f"hub** inside real gunicorn gevent workers: {g} concurrent `pg_sleep({w:g})` in "
            f"one worker took {num(factor, '{:.2f}')}× as long as one sleep (1× when they "
            f"overlap, {g}× when they run one at a time) and the hub stalled for up to "
            f"{num(lag, '{:,.0f}')} ms, so every other request in that worker waited"
            + _requests_felt(blocking, ok) + ".")
    if busy:
        cpu = _worst(busy, "cpu_during_waits")
        out.append(
            f"**psycopg 3 {_names(busy)} {_verb(busy, 'BUSY-WAITS', 'BUSY-WAIT')}**: while the "
            f"server slept, a worker used {num(cpu, '{:.2f}')} CPU-seconds per second (healthy "
            "≈ 0.01): the wait loop yields to the hub but never sleeps.")
    if ok:
        factor, lag = _worst(ok, "wait_factor"), _worst(ok, "max_hub_lag_ms")
        figures = (f"{_verb(ok, 'its', 'their')} {g} concurrent `pg_sleep({w:g})` overlapped "
                   f"(at most {num(factor, '{:.2f}')}× one sleep) and the hub was never late "
                   f"by more than {num(lag, '{:,.1f}')} ms")
        if blocking or busy:
            out.append(f"The {_names(ok)} {_verb(ok, 'build cooperates', 'builds cooperate')}: "
                       f"{figures}.")
        else:
            out.append(f"**Every psycopg 3 build under test cooperates with gevent** "
                       f"({_names(ok)}) inside real gunicorn gevent workers: {figures}.")
    if errors:
        out.append("The probe failed for " + "; ".join(
            f"{label(b)} ({b.error or b.cause})" for b in errors) + ".")
    if not tested and not errors:
        out.append("No psycopg 3 build under test could run here.")
    causes: dict[str, list[BuildResult]] = {}
    for b in blocking + busy:
        if b.cause:
            causes.setdefault(b.cause, []).append(b)
    for cause, builds in causes.items():
        out.append(f"Cause ({_names(builds)}): {cause}.")
    baselines = [b for b in result.builds if b.baseline and b.verdict is not Verdict.UNAVAILABLE]
    if baselines and not missed:
        out.append("The baselines got their known classes (" + ", ".join(
            f"{label(b)} {b.verdict.value}" for b in baselines)
            + "), so the detector saw what it should.")
    elif not baselines and result.builds:
        out.append("No baseline ran, so nothing in this run shows the detector was live.")
    setup = _versions(result)
    if setup:
        out.append(f"Setup: {setup}" + ("; gunicorn `--preload`." if result.preload else "."))
    return " ".join(out)


def requests_of(b: BuildResult):
    """The HTTP request figures of a build (``RequestFigures``), when requests were sent."""
    return getattr(b.metrics, "requests", None) if b.metrics is not None else None


def _requests_felt(bad: Sequence[BuildResult], ok: Sequence[BuildResult]) -> str:
    """``: HTTP requests to those workers had a p99 of 1,542 ms (16 ms when OK)``, if measured."""
    def worst(builds):
        values = [r.latency.p99_us for r in map(requests_of, builds)
                  if r is not None and r.latency.p99_us is not None]
        return max(values) / 1000 if values else None

    bad_p99, ok_p99 = worst(bad), worst(ok)
    if bad_p99 is None:
        return ""
    text = f" (HTTP requests to those workers had a p99 of {bad_p99:,.0f} ms"
    if ok_p99 is not None:
        text += f", against {ok_p99:,.0f} ms for the cooperating builds"
    return text + ")"


def verdict_rows(result: RunResult) -> Rows:
    """The verdict table (``content.verdict_table``) as headers and rows of cell texts."""
    headers, rows, _, _ = table_data(verdict_table(result))
    return headers, rows


def table_legend(result: RunResult) -> str:
    """What the table's columns mean, with this run's workload."""
    shape = _shape(result)
    if shape is None:
        return ""
    workers, g, w = shape
    return (f"{workers} workers × {g} greenlets per build. **wait×**: wall time of {g} "
            f"concurrent `pg_sleep({w:g})` / {w:g} s (1× = they overlap, {g}× = one at a time). "
            "**hub lag**: latest heartbeat during the waits. **CPU/s waits**: worker CPU-seconds "
            "per wall-second while the server slept. † baseline with a known class. `SELECT 1` "
            "latency alone cannot show blocking: a blocked hub runs one query at a time, so "
            "each looks fast (shown in italics for BLOCKING builds). **runnable**: share of that "
            "time the worker was on a CPU or waiting for one." + _requests_legend(result))


def _requests_legend(result: RunResult) -> str:
    r = next((requests_of(b) for b in result.builds if requests_of(b)), None)
    if r is None:
        return ""
    return (f" **req p99**: HTTP requests sent to the same workers at {r.rate:g}/s, each "
            f"running `{r.query}`, timed from when each was due to its last byte, so "
            "queueing behind a blocked hub counts.")


def evidence_lines(b: BuildResult) -> list[str]:
    """Every rule with its numbers, and whether it fired."""
    return [("fired: " if e.fired else "not fired: ") + e.text for e in b.evidence]


def worker_rows(b: BuildResult) -> Rows:
    """Each worker's own figures (the build's are its worst worker's)."""
    headers = ["worker pid", "wait× per window", "hub lag ms", "CPU/s waits",
               "SELECT 1 p50 µs", "p99 µs", "q/s", "CPU/query µs"]
    rows = [[str(w.pid), ", ".join(f"{f:.2f}" for f in w.wait_factors),
             num(w.max_hub_lag_ms, "{:,.1f}"), num(w.cpu_during_waits, "{:.3f}"),
             num(w.select1.p50_us), num(w.select1.p99_us), num(w.select1_qps),
             num(w.cpu_per_query_us, "{:,.1f}")] for w in b.workers]
    return headers, rows


def _yes_no(value) -> str:
    return "–" if value is None else ("yes" if value else "no")


def worker_fact_rows(result: RunResult) -> Rows:
    """The facts that decide a wait function (docs/how-it-works.md), as each build's workers
    reported them about themselves."""
    builds = [b for b in result.builds if b.facts]
    headers = ["fact (inside the workers)", *[label(b) for b in builds]]
    if not builds:
        return headers, []

    def pg(b, key):
        return (b.facts.get("psycopg") or {}).get(key)

    def pg2(b, key):
        return (b.facts.get("psycopg2") or {}).get(key)

    def env(b, key):
        return (b.facts.get("env") or {}).get(key)

    def imported(b):
        if "driver_imported_in_master" not in b.facts:
            return None
        return "gunicorn master" if b.facts["driver_imported_in_master"] else "worker"

    def patched_at_import(b):
        return _yes_no((b.facts.get("driver_import") or {}).get("select_patched"))

    spec = [
        ("psycopg `__version__`", lambda b: pg(b, "version")),
        ("psycopg `pq.__impl__`", lambda b: pg(b, "impl")),
        ("libpq at runtime `pq.version()`", lambda b: pg(b, "libpq")),
        ("libpq built against `pq.__build_version__`", lambda b: pg(b, "libpq_build")),
        ("`psycopg.waiting.wait`", lambda b: pg(b, "wait")),
        ("env `PSYCOPG_IMPL`", lambda b: env(b, "PSYCOPG_IMPL")),
        ("env `PSYCOPG_WAIT_FUNC`", lambda b: env(b, "PSYCOPG_WAIT_FUNC")),
        ("psycopg2 version", lambda b: pg2(b, "version")),
        ("psycopg2 libpq", lambda b: pg2(b, "libpq")),
        ("psycopg2 wait callback", lambda b: pg2(b, "wait_callback")
         or ("none" if b.facts.get("psycopg2") else None)),
        ("psycogreen", lambda b: b.facts.get("psycogreen")),
        ("driver imported in", imported),
        ("`select` patched when the driver was imported", patched_at_import),
        ("`is_module_patched(\"select\")`", lambda b: _yes_no(b.facts.get("select_patched"))),
        ("`is_module_patched(\"socket\")`", lambda b: _yes_no(b.facts.get("socket_patched"))),
        ("gevent", lambda b: b.facts.get("gevent")),
        ("greenlet", lambda b: b.facts.get("greenlet")),
        ("gunicorn", lambda b: b.facts.get("gunicorn")),
        ("worker class", lambda b: b.facts.get("worker_class")),
        ("Python", lambda b: b.facts.get("python")),
        ("import error", lambda b: b.facts.get("import_error")),
    ]
    rows = []
    for fact, get in spec:
        values = [get(b) for b in builds]
        if all(v is None for v in values) and fact != "env `PSYCOPG_WAIT_FUNC`":
            continue  # e.g. no psycopg2 build ran: no psycopg2 rows
        rows.append([fact, *["–" if v is None else str(v) for v in values]])
    return headers, rows


def machine_rows(result: RunResult) -> list[tuple[str, str]]:
    """The machine and the geventprobe process (the parent, not the workers)."""
    env = result.environment or {}
    rows = [("OS", env.get("os")), ("kernel", env.get("kernel")),
            ("architecture", env.get("machine")), ("CPUs", env.get("cpu_count")),
            ("memory GiB", env.get("memory_gib")),
            ("load average (1, 5, 15 min)", ", ".join(str(x) for x in env["load_average"])
             if env.get("load_average") else None),
            ("Python (geventprobe)", " ".join(str(x) for x in (
                env.get("python_implementation"), env.get("python")) if x) or None),
            ("geventprobe", result.tool_version)]
    pkgs = env.get("packages") or {}
    installed = ", ".join(f"{k} {v}" for k, v in pkgs.items() if v)
    if installed:
        rows.append(("installed packages", installed))
    return [(k, str(v)) for k, v in rows if v is not None]


def server_rows(result: RunResult) -> list[tuple[str, str]]:
    """The PostgreSQL server the probe ran against (its address is not a fact anyone needs)."""
    s = result.server or {}
    rows = [("PostgreSQL", s.get("version")), ("server_version_num", s.get("version_num")),
            ("max_connections", s.get("max_connections")),
            ("started by geventprobe", _yes_no(s.get("embedded")) if "embedded" in s else None)]
    return [(k, str(v)) for k, v in rows if v is not None]


def matrix_rows(result: RunResult) -> Rows | None:
    """The version matrix's isolated environments, when one ran."""
    envs = getattr(result, "matrix", None)
    if not envs:
        return None
    headers = ["environment", "versions", "Python", "installer", "cached", "set-up s",
               "problem"]
    rows = []
    for e in envs:
        problem = getattr(e, "error", None) or "; ".join(
            f"{k}: {v}" for k, v in (getattr(e, "missing", None) or {}).items())
        rows.append([str(getattr(e, "label", "") or getattr(e, "name", "")),
                     ", ".join(f"{k} {v}" for k, v in (getattr(e, "versions", None)
                                                         or {}).items()),
                     str(getattr(e, "python", "–")), str(getattr(e, "installer", "–")),
                     _yes_no(getattr(e, "cached", None)),
                     num(getattr(e, "seconds", None), "{:.1f}"), problem or "–"])
    return headers, rows


def app_rows(result: RunResult) -> list[tuple[str, str]]:
    """``run --app``: the user's app and the gunicorn settings it really ran with."""
    app = getattr(result, "app", None) or {}
    return [(str(k), v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str))
            for k, v in app.items()]


def command_line(result: RunResult) -> str:
    """The command as typed (secrets already redacted in the record)."""
    return shlex.join(result.command) if result.command else "(not recorded)"


def profile_toml(result: RunResult) -> str:
    """The workload and thresholds the run used, as a TOML profile one can pass to --config."""
    profile = result.profile or {}
    lines = [f"# profile: {profile.get('source', 'unknown')} (command-line flags applied); "
             f"--preload {'on' if result.preload else 'off'}"]
    for section in ("workload", "thresholds"):
        values = profile.get(section) or {}
        if values:
            lines.append(f"[{section}]")
            lines += [f"{k} = {v!r}" for k, v in values.items()]
    return "\n".join(lines)


def calibration_status(result: RunResult) -> str:
    """One line: calibration outcome, or that it did not run."""
    cal = getattr(result, "calibration", None)
    if cal is None:
        return ("Calibration not run (`geventprobe run --calibrate` first runs controls whose "
                "class is known, to show the detector is live on this machine).")
    word = "PASSED" if cal.passed else "INCONCLUSIVE" if cal.saturated else "FAILED"
    return f"Calibration {word}: {cal.reason} ({cal.duration_s:.1f} s)"


def calibration_rows(result: RunResult) -> Rows | None:
    """Each control: expected and got, with the figures it was judged on."""
    cal = getattr(result, "calibration", None)
    if cal is None:
        return None
    headers = ["control", "build", "expected", "got", "wait×", "hub lag ms", "CPU/s waits",
               "other load", "margin"]
    rows = []
    for o in cal.outcomes:
        mark = {True: " ✓", False: " ✗"}.get(o.passed, "")
        rows.append([o.control, o.build, o.expected, o.got + mark,
                     num(o.wait_factor, "{:.2f}×"), num(o.max_hub_lag_ms, "{:,.1f}"),
                     num(o.cpu_during_waits, "{:.3f}"), num(o.foreign_busy, "{:.0%}"),
                     num(o.margin, "{:.1f}×")])
    return headers, rows


def reproducible(result: RunResult) -> list[BuildResult]:
    """Builds that deserve a reproduction script."""
    return [b for b in result.builds if repro.wanted(b)]


def footer(result: RunResult) -> str:
    """Where the report came from."""
    return (f"geventprobe {result.tool_version}, run started {result.started_at}, took "
            f"{result.duration_s:.1f} s, exit {result.exit_code}. Every figure is in the JSON "
            f"record (`--json`, schema_version {result.schema_version}).")


# ---------------------------------------------------------------- Markdown


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]],
             right: Sequence[int] = ()) -> str:
    """A GitHub table; ``right`` are the indexes of right-aligned (figure) columns."""
    align = ["---:" if i in right else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |",
             "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _pairs(rows: list[tuple[str, str]]) -> str:
    return md_table(["", ""], [[f"**{k}**", v] for k, v in rows])


def doc_table(t: Table) -> str:
    """A document table as a GitHub table (misleading figures in italics)."""
    headers, rows, right, muted = table_data(t)
    rows = [[f"_{c}_" if (r, n) in muted and c != "–" else c for n, c in enumerate(row)]
            for r, row in enumerate(rows)]
    return md_table(headers, rows, right=right)


def connect_rows(result: RunResult) -> Rows | None:
    """The connect phase per build, when it was measured."""
    builds = [b for b in result.builds if b.metrics is not None and b.metrics.connect]
    if not builds:
        return None
    headers = ["build", "one alone ms", "all at once ms", "connect×", "hub lag ms", "rounds"]
    rows = [[label(b), num(c.single_ms, "{:,.1f}"), num(c.window_ms, "{:,.1f}"),
             num(c.window_factor, "{:.1f}×"), num(c.max_hub_lag_ms, "{:,.1f}"), str(c.rounds)]
            for b in builds for c in [b.metrics.connect]]
    return headers, rows


def timing_lines(result: RunResult) -> list[str]:
    """Where the time went: the run's phases, then each build's."""
    out = [f"run: {timings_line(result.timings)}"] if result.timings else []
    out += [f"{label(b)}: {timings_line(b.timings)}" for b in result.builds if b.timings]
    return out


def details_wanted(b: BuildResult) -> bool:
    """A build gets a causes-and-fixes entry when it is not OK or has routes or stacks."""
    return b.verdict is not Verdict.OK or bool(b.routes or b.blocked_by)


def _build_details(b: BuildResult) -> list[str]:
    out = [f"#### {label(b)}: {verdict_label(b)}", ""]
    if b.baseline and b.verdict.value == b.expected:
        out += ["Baseline, as expected.", ""]
    if b.verdict is Verdict.UNAVAILABLE:
        out += [f"Not tested: {b.cause}.", "", f"Install: `{b.install}`", ""]
        return out
    if b.error:
        out += ["Error:", "", "```", b.error, "```", ""]
    out += [f"- {line}" for line in evidence_lines(b)]
    if b.evidence:
        out.append("")
    if b.cause and b.verdict is not Verdict.ERROR:
        out += [f"**Cause:** {b.cause}", ""]
    if b.advice:
        out += [f"**Fix:** {b.advice}", ""]
    if b.blocked_by:
        out += [f"- who blocked: {blocked_line(s)}" for s in b.blocked_by] + [""]
    if b.worker_timeouts:
        out += [f"gunicorn killed {b.worker_timeouts} worker(s) whose hub was blocked "
                "(`WORKER TIMEOUT`).", ""]
    if b.routes:
        out += [doc_table(route_table(b.routes)), ""]
        for r in b.routes:
            if r.verdict is Verdict.OK:
                continue
            out += [f"**{r.route}: {r.verdict.value}**", ""]
            out += [f"- {e.text}" for e in r.evidence if e.fired]
            out += [f"- Cause: {r.cause}"] if r.cause else []
            out += [f"- Fix: {r.advice}"] if r.advice else []
            out += [f"- First error: `{r.first_error}`"] if r.first_error else []
            out += [f"- who blocked: {blocked_line(s)}" for s in r.blocked_by]
            out.append("")
    return out


def render(result: RunResult) -> str:
    """The whole Markdown report."""
    out = ["## geventprobe: PostgreSQL drivers under gunicorn -k gevent", "",
           verdict_paragraph(result), ""]
    if result.builds:
        out += [doc_table(verdict_table(result)), "", table_legend(result), ""]
        if result.proxy is not None:
            out += [f"`--rtt`: {proxy_line(result.proxy)}.", ""]
        connect = connect_rows(result)
        if connect:
            out += ["### Connect phase", "", "Each worker opened one connection alone, then all "
                    "its greenlets' connections at once, while the heartbeat ran.", "",
                    md_table(*connect, right=range(1, 6)), ""]
        details = [b for b in result.builds if details_wanted(b)]
        if details:
            out += ["### Causes and fixes", ""]
            for b in details:
                out += _build_details(b)
        out += ["<details><summary>Per-worker figures</summary>", ""]
        for b in result.builds:
            if b.workers:
                headers, rows = worker_rows(b)
                out += [f"**{label(b)}**", "", md_table(headers, rows, right=range(1, 8)), ""]
        out += ["</details>", ""]
        if timing_lines(result):
            out += ["<details><summary>Where the time went</summary>", ""]
            out += [f"- {line}" for line in timing_lines(result)] + ["", "</details>", ""]
        out += [CHARTS_HINT, ""]
    out += ["### Calibration", "", calibration_status(result), ""]
    cal = calibration_rows(result)
    if cal:
        out += [md_table(*cal, right=range(4, 9)), ""]
    if result.notes:
        out += ["### Notes", ""] + [f"- {n}" for n in result.notes] + [""]
    headers, rows = worker_fact_rows(result)
    if rows:
        out += ["### Environment inside the workers", "",
                "What each build's gunicorn gevent workers reported about themselves, after "
                "the worker had booted.", "", md_table(headers, rows), ""]
    if app_rows(result):
        out += ["### App under test", "", _pairs(app_rows(result)), ""]
    envs = matrix_rows(result)
    if envs:
        out += ["### Version matrix", "", "Each version set ran in its own isolated virtual "
                "environment.", "", md_table(*envs, right=(5,)), ""]
    out += ["### PostgreSQL server", "", _pairs(server_rows(result)), "",
            "### Machine", "", _pairs(machine_rows(result)), "",
            "### Command and configuration", "", "```sh", command_line(result), "```", "",
            "```toml", profile_toml(result), "```", ""]
    scripts = reproducible(result)
    if scripts:
        out += ["### Reproduction", "",
                "Each script rebuilds one build's setup in a single process, without gunicorn "
                "or geventprobe, runs the same concurrent `pg_sleep` greenlets beside a ticker "
                "(as psycopg's `tests/test_gevent.py` does) and prints whether the sleeps were "
                "serialised. Pass the DSN as its argument or in `$DSN`.", ""]
        for b in scripts:
            out += [f"<details><summary><code>{script_name(b)}</code>: {b.verdict.value}"
                    "</summary>", "", "```python", repro.script(b, result).rstrip(), "```", "",
                    "</details>", ""]
    out += ["---", "", f"<sub>{footer(result)}</sub>", ""]
    return "\n".join(out)


def write(result: RunResult, path: str) -> None:
    """Write the report to ``path`` (write then rename: a reader never sees half a file)."""
    write_atomic(path, render(result))


def step_summary(result: RunResult, budget: int = STEP_SUMMARY_LIMIT) -> str:
    """The report for ``$GITHUB_STEP_SUMMARY``, within ``budget`` bytes.

    The whole report when it fits; else without the long sections (the JSON
    artifact still has everything); else just the verdict paragraph.
    """
    full = render(result)
    if len(full.encode()) <= budget:
        return full
    short = "\n".join(["## geventprobe", "", verdict_paragraph(result), "",
                       doc_table(verdict_table(result)), "",
                       "_Shortened to fit GitHub's 1 MiB job summary: the full report is in "
                       "`--markdown` / `--json`._", ""])
    if len(short.encode()) <= budget:
        return short
    paragraph = f"## geventprobe\n\n{verdict_paragraph(result)}\n"
    data = paragraph.encode()[:max(0, budget)]
    return data.decode(errors="ignore")


def append_step_summary(result: RunResult, path: str) -> None:
    """Append the report to GitHub's job summary file, keeping the step under 1 MiB."""
    try:
        used = os.path.getsize(path)
    except OSError:
        used = 0
    text = step_summary(result, STEP_SUMMARY_LIMIT - used - 2)
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n" + text + "\n")
