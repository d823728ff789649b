"""The findings paragraph: what a run found, on which evidence, why, whether the detector was
live, and the setup: what a maintainer reads first in a report file."""

from __future__ import annotations

from collections.abc import Sequence

from geventprobe import kinds
from geventprobe.core.rules import baseline_mismatches
from geventprobe.record import BuildResult, RunResult, Verdict
from geventprobe.report.cells import label, names, num


def _verb(builds: Sequence[BuildResult], singular: str, plural: str) -> str:
    return singular if len(builds) == 1 else plural


def shape(result: RunResult) -> tuple[int, int, float] | None:
    """(workers, greenlets, w) of the run: from its figures, else from its profile."""
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


def _requests_felt(bad: Sequence[BuildResult], ok: Sequence[BuildResult]) -> str:
    """``: HTTP requests to those workers had a p99 of 1,542 ms (16 ms when OK)``, if measured."""
    def worst(builds):
        values = [b.metrics.requests.latency.p99_us for b in builds
                  if b.metrics is not None and b.metrics.requests is not None
                  and b.metrics.requests.latency.p99_us is not None]
        return max(values) / 1000 if values else None

    bad_p99, ok_p99 = worst(bad), worst(ok)
    if bad_p99 is None:
        return ""
    text = f" (HTTP requests to those workers had a p99 of {bad_p99:,.0f} ms"
    if ok_p99 is not None:
        text += f", against {ok_p99:,.0f} ms for the cooperating builds"
    return text + ")"


def setup(result: RunResult, servers: tuple[str, ...] = ("gunicorn",)) -> str:
    """The versions that matter, as the workers reported them (the parent's as a fallback);
    ``servers``: the server packages to name (a uWSGI run names its own)."""
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
    for name in ("gevent", "greenlet", *servers):
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


def _routes(builds: Sequence[BuildResult]) -> list[str]:
    """``run --app --route``: each route that is not OK with its cause, then the OK ones."""
    out = []
    for b in builds:
        bad = [r for r in b.routes if r.verdict is not Verdict.OK]
        ok = [r.route for r in b.routes if r.verdict is Verdict.OK]
        out += [f"**Route {r.route} is {r.verdict.value}**" + (f": {r.cause}." if r.cause
                                                                else ".") for r in bad]
        if ok:
            out.append(f"{'Route' if len(ok) == 1 else 'Routes'} {', '.join(ok)} "
                       f"{'is' if len(ok) == 1 else 'are'} OK.")
    return out


def paragraph(result: RunResult) -> str | None:
    """One paragraph: what was found, the evidence, the cause, whether the detector was live.

    None for ``geventprobe calibrate``: its controls' table and verdict are the whole story.
    """
    if not result.builds:
        return None
    kind = kinds.report_of(result)
    if kind is not None:
        return kind.findings(result)
    return wsgi(result)


def wsgi(result: RunResult, where: str | None = None, servers: tuple[str, ...] = ("gunicorn",),
         drivers: bool | None = None) -> str:
    """The paragraph of a run of WSGI workers: the driver builds, or the user's app under
    gunicorn, or, in the server's words (``where``: ``under your uWSGI configuration``; its
    packages named in the setup, ``servers``), under another WSGI server (``drivers``: the
    built-in builds; None: unless the run probed an app)."""
    app = bool(result.app) if drivers is None else not drivers
    # Who is judged: psycopg 3 builds beside their baselines, or the user's app.
    subject = "Your app" if app else "psycopg 3"
    where = where or ("under your gunicorn config" if app else
                      "inside real gunicorn gevent workers")
    tested = [b for b in result.builds if not b.baseline and b.verdict is not Verdict.UNAVAILABLE]
    blocking = [b for b in tested if b.verdict is Verdict.BLOCKING]
    busy = [b for b in tested if b.verdict is Verdict.BUSY_WAIT]
    ok = [b for b in tested if b.verdict is Verdict.OK]
    errors = [b for b in result.builds if b.verdict is Verdict.ERROR]
    missed = baseline_mismatches(result.builds)
    found = shape(result)
    g, w = (found[1], found[2]) if found else (None, None)
    out: list[str] = []
    if missed:
        out.append("**INCONCLUSIVE**: baseline " + ", ".join(
            f"{label(b)} got {b.verdict.value} instead of {b.expected}" for b in missed)
            + ", so the detector is not seeing what it should and no verdict of this run can "
            "be trusted.")
    if blocking:
        factor, lag = _worst(blocking, "wait_factor"), _worst(blocking, "max_hub_lag_ms")
        head = (f"**{subject} {names(blocking)} {_verb(blocking, 'BLOCKS', 'BLOCK')} the gevent "
                f"hub** {where}")
        if factor is None or g is None:  # no figures (gunicorn killed the workers): the rules
            fired = [e.text for b in blocking for e in b.evidence if e.fired]
            out.append(head + (f": {fired[0]}." if fired else "."))
        else:
            out.append(
                f"{head}: {g} concurrent `pg_sleep({w:g})` in "
                f"one worker took {num(factor, '{:.2f}')}× as long as one sleep (1× when they "
                f"overlap, {g}× when they run one at a time) and the hub stalled for up to "
                f"{num(lag, '{:,.0f}')} ms, so every other request in that worker waited"
                + _requests_felt(blocking, ok) + ".")
    # Spinning only while the connections sat idle (the idle window's rule alone) is said
    # so: the waits' sentence would quote a healthy figure.
    idle = [b for b in busy if {e.phase for e in b.evidence if e.fired} == {"idle"}]
    spinning = [b for b in busy if b not in idle]
    if idle:
        cpu = _worst(idle, "cpu_while_idle")
        out.append(
            f"**{subject} {names(idle)} {_verb(idle, 'BUSY-WAITS', 'BUSY-WAIT')}** while "
            f"idle: with every connection open and none in use, a worker used "
            f"{num(cpu, '{:.2f}')} CPU-seconds per second (healthy ≈ 0.05): something polls "
            "the idle connections without sleeping.")
    if spinning:
        cpu = _worst(spinning, "cpu_during_waits")
        out.append(
            f"**{subject} {names(spinning)} {_verb(spinning, 'BUSY-WAITS', 'BUSY-WAIT')}**: "
            "while the "
            f"server slept, a worker used {num(cpu, '{:.2f}')} CPU-seconds per second (healthy "
            "≈ 0.01): the wait loop yields to the hub but never sleeps.")
    if ok:
        factor, lag = _worst(ok, "wait_factor"), _worst(ok, "max_hub_lag_ms")
        figures = (f"{_verb(ok, 'its', 'their')} {g} concurrent `pg_sleep({num(w, '{:g}')})` "
                   f"overlapped (at most {num(factor, '{:.2f}')}× one sleep) and the hub was "
                   f"never late by more than {num(lag, '{:,.1f}')} ms")
        if app:
            out.append(f"**Your app {names(ok)} cooperates with gevent** {where}: {figures}.")
        elif blocking or busy:
            out.append(f"The {names(ok)} {_verb(ok, 'build cooperates', 'builds cooperate')}: "
                       f"{figures}.")
        else:
            out.append(f"**Every psycopg 3 build under test cooperates with gevent** "
                       f"({names(ok)}) {where}: {figures}.")
    out += _routes(tested)
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
        out.append(f"Cause ({names(builds)}): {cause}.")
    baselines = [b for b in result.builds if b.baseline and b.verdict is not Verdict.UNAVAILABLE]
    if baselines and not missed:
        out.append("The baselines got their known classes (" + ", ".join(
            f"{label(b)} {b.verdict.value}" for b in baselines)
            + "), so the detector saw what it should.")
    elif not baselines:
        out.append("No baseline ran, so nothing in this run shows the detector was live.")
    text = setup(result, servers)
    if text:
        out.append(f"Setup: {text}" + ("; gunicorn `--preload`." if result.preload else "."))
    return " ".join(out)
