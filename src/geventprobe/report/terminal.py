"""The terminal report: the verdict table with its evidence, then causes and fixes."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from geventprobe.model import BuildResult, RunResult, Verdict

_STYLE = {
    Verdict.OK: "bold green",
    Verdict.BLOCKING: "bold red",
    Verdict.BUSY_WAIT: "bold magenta",
    Verdict.ERROR: "bold yellow",
    Verdict.UNAVAILABLE: "dim",
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
    key = "psycopg2" if b.build.startswith("psycopg2") else "psycopg"
    return (b.facts.get(key) or {}).get("version") or "–"


def impl(b: BuildResult) -> str:
    """psycopg's implementation (or the psycopg2 setup)."""
    if b.build.startswith("psycopg2"):
        return "psycogreen" if b.build == "psycopg2-green" else "plain"
    return (b.facts.get("psycopg") or {}).get("impl") or "–"


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
    for name, justify in [("build", "left"), ("version", "left"), ("impl", "left"),
                          ("wait", "left"), ("verdict", "left"),
                          ("wait×", "right"), ("hub lag ms", "right"),
                          ("CPU/s waits", "right"), ("p50 µs", "right"),
                          ("p99 µs", "right"), ("q/s", "right"),
                          ("p99 | CPU/q", "right")]:
        t.add_column(name, justify=justify, no_wrap=True)
    for b in result.builds:
        m = b.metrics
        name = Text(b.build)
        if b.baseline:
            name.append(" †")
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
            Text(_num(m and m.select1.p50_us), style=latency_style),
            Text(_num(m and m.select1.p99_us), style=latency_style),
            Text(_num(m and m.select1_qps), style=latency_style),
            ratios,
        )
    return t


def details(result: RunResult) -> list[Text]:
    """Per build: cause and fix for every non-OK verdict, with the rules that fired."""
    lines: list[Text] = []
    for b in result.builds:
        if b.verdict is Verdict.OK:
            continue
        head = Text(f"{b.build}: ", style="bold")
        head.append(b.verdict.value, style=_STYLE[b.verdict])
        if b.baseline and b.verdict.value == b.expected:
            head.append(" — baseline, as expected", style="dim")
        lines.append(head)
        for e in b.evidence:
            if e.fired:
                lines.append(Text(f"  evidence: {e.text}"))
        if b.cause:
            lines.append(Text(f"  cause: {b.cause}"))
        if b.advice:
            lines.append(Text(f"  fix: {b.advice}"))
        if b.worker_timeouts:
            lines.append(Text(f"  gunicorn killed {b.worker_timeouts} worker(s) for a blocked "
                              "hub (WORKER TIMEOUT)"))
    return lines


def render(result: RunResult, console: Console) -> None:
    """Print the table, the details, the notes and the one-line summary."""
    console.print(table(result))
    m = next((b.metrics for b in result.builds if b.metrics), None)
    if m is not None:
        console.print(
            f"[dim]{m.workers} workers × {m.greenlets} greenlets. wait× = wall time of "
            f"{m.greenlets} concurrent pg_sleep({m.wait_seconds:g}) / w (1.00× = they overlap). "
            "hub lag = latest heartbeat during the waits. CPU/s waits = worker CPU-s per "
            "wall-s while the server slept. p50/p99/q/s = SELECT 1 in the greenlets: alone it "
            "cannot show blocking (a blocked hub looks fast).[/dim]")
    for line in details(result):
        console.print(line)
    for note in result.notes:
        console.print(Text(f"note: {note}", style="yellow"))
    console.print(Text(result.summary, style="bold"))
