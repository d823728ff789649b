"""The terminal report: the verdict table with its evidence, then causes and fixes."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from geventprobe.model import BuildResult, Calibration, RunResult, Verdict

_STYLE = {
    Verdict.OK: "bold green",
    Verdict.BLOCKING: "bold red",
    Verdict.BUSY_WAIT: "bold magenta",
    Verdict.ERROR: "bold yellow",
    Verdict.UNAVAILABLE: "dim",
    Verdict.INCONCLUSIVE: "bold yellow",
}


def _num(value: float | None, fmt: str = "{:,.0f}") -> str:
    return "–" if value is None else fmt.format(value)


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"×{value:.2f}"


def wait_name(b: BuildResult) -> str:
    """The wait function or callback the workers used."""
    pg = b.facts.get("psycopg")
    if b.facts.get("driver") == "psycopg2" or (b.build.startswith("psycopg2")):
        cb = (b.facts.get("psycopg2") or {}).get("wait_callback")
        return cb.rsplit(".", 1)[-1].replace("_wait_callback", "") if cb else (
            "none" if b.facts else "–")
    return (pg or {}).get("wait") or "–"


def version(b: BuildResult) -> str:
    """The driver version the workers imported."""
    key = "psycopg2" if b.build.startswith("psycopg2") or _app_psycopg2(b) else "psycopg"
    # A matrix row that did not run (UNAVAILABLE) has no facts: show the version it asked for.
    asked = (b.versions or {}).get("psycopg2-binary" if key == "psycopg2" else key)
    return (b.facts.get(key) or {}).get("version") or asked or "–"


def impl(b: BuildResult) -> str:
    """psycopg's implementation (or the psycopg2 setup)."""
    if b.build.startswith("psycopg2"):
        return "psycogreen" if b.build == "psycopg2-green" else "plain"
    if _app_psycopg2(b):  # run --app: what the user's workers set up
        cb = (b.facts.get("psycopg2") or {}).get("wait_callback") or ""
        return "psycogreen" if cb.startswith("psycogreen") else "callback" if cb else "plain"
    return (b.facts.get("psycopg") or {}).get("impl") or "–"


def _app_psycopg2(b: BuildResult) -> bool:
    return b.facts.get("mode") == "app" and b.facts.get("driver") == "psycopg2"


def requests_text(b: BuildResult) -> Text:
    """HTTP request latency at the probe route, p99 in ms, and errors if any."""
    r = b.metrics.requests if b.metrics is not None else None
    if r is None:
        return Text("–")
    text = Text(_num(r.latency.p99_us and r.latency.p99_us / 1000),
                style="bold red" if b.verdict is Verdict.BLOCKING else "")
    if r.errors:
        text.append(f" ({r.errors} err)", style="yellow")
    return text


def requests_legend(result: RunResult) -> str | None:
    """What the request column means, with this run's rate and query."""
    r = next((b.metrics.requests for b in result.builds
              if b.metrics is not None and b.metrics.requests is not None), None)
    if r is None:
        return None
    return (f"req p99 ms = HTTP requests at {r.path} in the same workers, {r.rate:g}/s open loop "
            f"for {r.duration_s:.1f} s after the windows while every greenlet kept waiting on the "
            f"server, each running {r.query}: p99 latency from when each was due (queueing "
            "included); p50/p90/max and errors in the JSON.")


def verdict_text(b: BuildResult) -> Text:
    """The verdict, with what a baseline was expected to get."""
    text = Text(b.verdict.value, style=_STYLE[b.verdict])
    if b.baseline and b.verdict not in (Verdict.UNAVAILABLE, Verdict.ERROR):
        ok = b.verdict.value == b.expected
        text.append(" ✓" if ok else f" ✗ expected {b.expected}",
                    style="dim" if ok else "bold red")
    return text


def table(result: RunResult) -> Table:
    """The verdict table: evidence beside the latency, never latency alone."""
    t = Table(title="geventprobe: PostgreSQL drivers under gunicorn -k gevent",
              title_justify="left", header_style="bold", caption_justify="left",
              caption="† baseline with a known class (psycopg2-green must be OK, psycopg2 "
                      "BLOCKING); ratios are SELECT 1 p99 and CPU per query vs psycopg2-green")
    if result.app:  # run --app: one row, the user's app, no baselines
        t.title = "geventprobe: your app under gunicorn -k gevent"
        t.caption = None
    for name, justify in [("build", "left"), ("version", "left"), ("impl", "left"),
                          ("wait", "left"), ("verdict", "left"),
                          ("wait×", "right"), ("hub lag ms", "right"),
                          ("CPU/s waits", "right"), ("runnable", "right"),
                          ("req p99 ms", "right"), ("p50 µs", "right"),
                          ("p99 µs", "right"), ("q/s", "right"),
                          ("p99 | CPU/q", "right")]:
        t.add_column(name, justify=justify, no_wrap=True)
    for b in result.builds:
        m = b.metrics
        name = Text(b.build)
        if b.baseline:
            name.append(" †")
        if matrix_suffix(b, result):
            name.append(f" · {matrix_suffix(b, result)}", style="cyan")
        ratios = "–"
        if m is not None and m.vs_baseline is not None:
            ratios = f"{_ratio(m.vs_baseline.p99)} | {_ratio(m.vs_baseline.cpu_per_query)}"
        # A blocked hub runs one query at a time, so its SELECT 1 looks fast: grey it out.
        latency_style = "dim" if b.verdict is Verdict.BLOCKING else ""
        t.add_row(
            name, version(b), impl(b), wait_name(b), verdict_text(b),
            _num(m and m.wait_factor, "{:.2f}×"),
            _num(m and m.max_hub_lag_ms, "{:,.1f}"),
            _num(m and m.cpu_during_waits, "{:.3f}"),
            _num(m and m.runnable_during_waits, "{:.0%}"),
            requests_text(b),
            Text(_num(m and m.select1.p50_us), style=latency_style),
            Text(_num(m and m.select1.p99_us), style=latency_style),
            Text(_num(m and m.select1_qps), style=latency_style),
            ratios,
        )
    return t


def matrix_suffix(b: BuildResult, result: RunResult) -> str:
    """In a version matrix, the varied versions a row ran with (``psycopg 3.1.12``)."""
    if not result.matrix or not b.versions:
        return ""
    varied = result.matrix[0].varied
    return " · ".join(f"{p} {b.versions[p]}" for p in varied if p in b.versions)


def row_label(b: BuildResult, result: RunResult) -> str:
    """The build's name, with its versions in a version matrix."""
    suffix = matrix_suffix(b, result)
    return f"{b.build} · {suffix}" if suffix else b.build


def matrix_lines(result: RunResult) -> list[Text]:
    """Version matrix: each environment, whether it was reused from the cache, what it holds."""
    envs = result.matrix or []
    reused = sum(e.cached for e in envs)
    lines = [Text(f"version matrix: {len(envs)} isolated environment(s), {reused} reused from "
                  "the cache", style="bold")]
    for e in envs:
        if e.error:
            state = Text("UNAVAILABLE", style="dim")
            how = f": {e.error}"
        else:
            state = Text("cached" if e.cached else f"created in {e.seconds:.1f} s",
                         style="green" if e.cached else "")
            held = ", ".join(f"{k} {v}" for k, v in e.installed.items()
                             if k in ("psycopg", "psycopg-binary", "psycopg-c", "psycopg2-binary",
                                      "psycogreen", "gevent", "greenlet", "gunicorn"))
            how = f" with {e.installer}: {held} ({e.path})"
        line = Text(f"  {e.label}: ")
        line.append(state)
        line.append(how, style="dim")
        lines.append(line)
        for build, reason in e.missing.items():
            lines.append(Text(f"    {build} UNAVAILABLE: {reason}", style="dim"))
    return lines


def explanation(b: BuildResult) -> list[Text]:
    """One build's rules that fired, with their numbers, its cause and its fix."""
    lines = [Text(f"  evidence: {e.text}") for e in b.evidence if e.fired]
    if b.cause:
        lines.append(Text(f"  cause: {b.cause}"))
    if b.advice:
        lines.append(Text(f"  fix: {b.advice}"))
    return lines


def details(result: RunResult) -> list[Text]:
    """Per build: cause and fix for every non-OK verdict, with the rules that fired."""
    lines: list[Text] = []
    for b in result.builds:
        if b.verdict is Verdict.OK:
            continue
        head = Text(f"{row_label(b, result)}: ", style="bold")
        head.append(b.verdict.value, style=_STYLE[b.verdict])
        if b.baseline and b.verdict.value == b.expected:
            head.append(" — baseline, as expected", style="dim")
        lines.append(head)
        lines += explanation(b)
        if b.worker_timeouts:
            lines.append(Text(f"  gunicorn killed {b.worker_timeouts} worker(s) for a blocked "
                              "hub (WORKER TIMEOUT)"))
    return lines


def calibration_table(cal: Calibration) -> Table:
    """Control → expected → got, with the figures each was judged on."""
    t = Table(title="calibration: controls whose class is known", title_justify="left",
              header_style="bold", caption_justify="left",
              caption="margin = deciding figure / its threshold for a fault, threshold / closest "
                      "figure for OK (>1 is on the right side)")
    for name, justify in [("control", "left"), ("expected", "left"), ("got", "left"),
                          ("wait×", "right"), ("hub lag ms", "right"), ("CPU/s waits", "right"),
                          ("runnable", "right"), ("other load", "right"), ("margin", "right")]:
        t.add_column(name, justify=justify, no_wrap=True)
    for o in cal.outcomes:
        mark = {True: " ✓", False: " ✗", None: ""}[o.passed]
        got = Text(o.got + mark, style=("green" if o.passed else "bold red" if o.passed is False
                                        else "dim"))
        t.add_row(o.control, o.expected, got, _num(o.wait_factor, "{:.2f}×"),
                  _num(o.max_hub_lag_ms, "{:,.1f}"), _num(o.cpu_during_waits, "{:.3f}"),
                  _num(o.runnable_during_waits, "{:.0%}"), _num(o.foreign_busy, "{:.0%}"),
                  _num(o.margin, "{:.1f}×"))
    return t


def render_calibration(cal: Calibration, console: Console) -> None:
    """The calibration table and its one-line outcome."""
    console.print(calibration_table(cal))
    style = "bold green" if cal.passed else "bold yellow" if cal.saturated else "bold red"
    word = "PASSED" if cal.passed else "INCONCLUSIVE" if cal.saturated else "FAILED"
    console.print(Text(f"calibration {word}: {cal.reason}", style=style))


def app_lines(result: RunResult) -> list[Text]:
    """``run --app``: the deployment that was probed, and what geventprobe changed in it."""
    a = result.app
    if not a:
        return []
    head = Text("your app: ", style="bold")
    head.append(f"{a['app']} in {a['chdir']}")
    config = a.get("gunicorn_config") or "no gunicorn config file"
    worker = (f"worker class {a['worker_class']}"
              + (f" (forced: yours is {a['their_worker_class']})" if a.get("worker_class_forced")
                 else " (yours)"))
    lines = [head, Text(f"  {config}; {worker}; {a['workers']} workers; preload "
                        f"{'on' if a.get('preload') else 'off'}; hooks: "
                        f"{', '.join(a.get('hooks') or []) or 'none'}")]
    if a.get("gunicorn_cmd_args"):
        lines.append(Text(f"  GUNICORN_CMD_ARGS: {a['gunicorn_cmd_args']}"))
    for o in a.get("overrides") or []:
        lines.append(Text(f"  geventprobe set {o}", style="dim"))
    return lines


def render(result: RunResult, console: Console) -> None:
    """Print the table, the details, the notes and the one-line summary."""
    if result.calibration is not None and not result.builds:  # `geventprobe calibrate`
        console.print(calibration_table(result.calibration))
        console.print(Text(result.summary, style="bold"))
        return
    if result.calibration is not None:
        render_calibration(result.calibration, console)
    for line in app_lines(result):
        console.print(line)
    console.print(table(result))
    m = next((b.metrics for b in result.builds if b.metrics), None)
    if m is not None:
        console.print(
            f"[dim]{m.workers} workers × {m.greenlets} greenlets. wait× = wall time of "
            f"{m.greenlets} concurrent pg_sleep({m.wait_seconds:g}) / w (1.00× = they overlap). "
            "hub lag = latest heartbeat during the waits. CPU/s waits = worker CPU-s per "
            "wall-s while the server slept; runnable = share of that time it was on a CPU or "
            "waiting for one. p50/p99/q/s = SELECT 1 in the greenlets: alone it "
            "cannot show blocking (a blocked hub looks fast).[/dim]")
        legend = requests_legend(result)
        if legend:
            console.print(Text(legend, style="dim"))
    if result.matrix:
        for line in matrix_lines(result):
            console.print(line)
    for line in details(result):
        console.print(line)
    for note in result.notes:
        console.print(Text(f"note: {note}", style="yellow"))
    console.print(Text(result.summary, style="bold"))
