"""The words and figures every report uses for one build: its name, driver, wait function,
verdict, deciding evidence, and the one-line forms of who blocked, the connect phase, the
delay proxy and the timings.

One set, read by every document builder (run, calibration, compare, bisect), so a cell or
a sentence is written one way whatever the format.
"""

from __future__ import annotations

import math

from geventprobe.record import (
    BlockedStack,
    BuildResult,
    ConnectFigures,
    DelayProxyFigures,
    Evidence,
    Verdict,
)
from geventprobe.report.document import Cell

VERDICT_STYLE = {
    Verdict.OK: "ok", Verdict.BLOCKING: "bad", Verdict.BUSY_WAIT: "busy",
    Verdict.ERROR: "warn", Verdict.UNAVAILABLE: "dim", Verdict.INCONCLUSIVE: "warn",
    Verdict.SERIALIZED: "bad", Verdict.FAILING: "bad",
}


def num(value: float | None, fmt: str = "{:,.0f}") -> str:
    """A figure, or an en dash when there is none (JSON has no NaN: a non-finite figure
    reads back as none, so it is shown as none here too)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return fmt.format(value)


def duration(ms: float | None) -> str:
    """``12 ms``, ``1.2 s``: a lag or a latency in the unit a reader takes in at a glance."""
    if ms is None or not math.isfinite(ms):
        return "–"
    return f"{ms / 1000:.1f} s" if ms >= 1000 else f"{ms:,.0f} ms" if ms >= 10 else \
        f"{ms:.1f} ms"


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


def names(builds: list[BuildResult]) -> str:
    """``binary``, ``binary and c``, ``binary, c and python``."""
    labels = [label(b) for b in builds]
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


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


def as_expected(b: BuildResult) -> bool:
    """A baseline that got its known class."""
    return b.baseline and b.verdict.value == b.expected


def verdict_label(b: BuildResult) -> str:
    """The verdict, with whether a baseline got its known class."""
    text = b.verdict.value
    if b.baseline and b.verdict not in (Verdict.UNAVAILABLE, Verdict.ERROR):
        text += " ✓" if b.verdict.value == b.expected else f" ✗ expected {b.expected}"
    return text


def verdict_cell(b: BuildResult) -> Cell:
    """The verdict as a styled cell (a narrow layout drops the ``expected ...``)."""
    text = verdict_label(b)
    short = text.split(" expected")[0] if " expected" in text else None
    return Cell(text, VERDICT_STYLE[b.verdict], short)


def deciding(b: BuildResult) -> str:
    """The deciding evidence in a few words: ``wait× 8.06, hub 1.2 s``."""
    m = b.metrics
    if b.verdict is Verdict.UNAVAILABLE:
        return "not installed here"
    if m is None:
        if b.verdict is Verdict.ERROR:
            return "probe failed"
        # gunicorn killed the workers before they reported: that is the evidence.
        return f"{b.worker_timeouts} killed (WORKER TIMEOUT)" if b.worker_timeouts else "–"
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


def ratio(value: float | None) -> str:
    """``×1.25``: a build's figure over the baseline's."""
    return num(value, "×{:.2f}")


def latency_hidden(b: BuildResult) -> bool:
    """True when the build's ``SELECT 1`` figures mislead: a blocked hub looks fast."""
    return b.verdict is Verdict.BLOCKING


def evidence_text(e: Evidence) -> str:
    """A rule in words, with the phase it was measured in when that was not the waits."""
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
    """``boot 1.2 s · connect 0.4 s · ...``."""
    return " · ".join(f"{k} {v:.1f} s" for k, v in timings.items())


def yes_no(value) -> str:
    """``yes``, ``no``, or ``–`` when unknown."""
    return "–" if value is None else ("yes" if value else "no")
