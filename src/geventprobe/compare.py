"""The core of ``geventprobe compare``: two saved runs, build by build.

For "did upgrading psycopg / removing --preload fix it?": each build's verdict
before and after, and the change of every evidence figure. What differs between
the two runs is listed, in two kinds (pyperf refuses to mix runs whose metadata
differ; so do we, for the differences that matter):

- **changes**: what one changes on purpose to see an effect (driver, gevent,
  greenlet, gunicorn or Python versions, ``--preload``, the wait function the
  workers ended up with, the PostgreSQL server). Listed, never refused.
- **confounders**: differences that make the figures incomparable, so that a
  changed figure could come from them rather than from the change under test:
  the workload (workers, greenlets, w, rounds...), the verdict thresholds, the
  machine's CPU count or architecture. ``compare`` refuses them unless forced.

Pure functions of two ``RunResult`` records; nothing is printed here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from geventprobe import kinds
from geventprobe.errors import ProbeError
from geventprobe.record import BuildResult, RunResult, Verdict

_FAULTS = (Verdict.BLOCKING, Verdict.BUSY_WAIT)


@dataclass(frozen=True)
class Difference:
    """One way the two runs differ."""

    what: str
    """What differs, e.g. ``psycopg (binary workers)`` or ``workload.greenlets``."""
    before: str
    after: str
    confounding: bool
    """True when it makes the figures incomparable (then ``compare`` refuses)."""


@dataclass(frozen=True)
class FigureChange:
    """One evidence figure of one build, before and after."""

    figure: str
    """The figure, as the verdict table names it (``wait×``, ``hub lag ms``...)."""
    before: float | None
    after: float | None
    lower_is_better: bool
    """True for every figure but throughput."""

    @property
    def ratio(self) -> float | None:
        """after / before (None when either is missing or before is zero)."""
        if self.before is None or self.after is None or self.before == 0:
            return None
        if not (math.isfinite(self.before) and math.isfinite(self.after)):
            return None
        return self.after / self.before


@dataclass(frozen=True)
class BuildChange:
    """One build in both runs (or in one of them)."""

    build: str
    before: Verdict | None
    """None: the build was not in the BEFORE run."""
    after: Verdict | None
    change: str
    """``fixed``, ``regressed``, ``unchanged``, ``changed``, ``added`` or ``removed``."""
    figures: list[FigureChange]
    facts: list[Difference]
    """What the build's workers reported differently (versions, wait function, import)."""
    baseline: bool


@dataclass(frozen=True)
class Comparison:
    """Two runs, side by side."""

    before: str
    """When the BEFORE run started, and its command."""
    after: str
    differences: list[Difference]
    """Run-level differences (environment, workload, thresholds, --preload, server)."""
    refused: str | None
    """Why comparing these two runs would be meaningless (None: comparable)."""
    forced: bool
    """True when the user compared them anyway."""
    builds: list[BuildChange]
    summary: str

    @property
    def regressed(self) -> list[BuildChange]:
        """Builds that cooperated before and block or busy-wait after."""
        return [b for b in self.builds if b.change == "regressed"]


_FIGURES: list[tuple[str, Callable, bool]] = [
    ("wait×", lambda m: m.wait_factor, True),
    ("hub lag ms", lambda m: m.max_hub_lag_ms, True),
    ("CPU/s waits", lambda m: m.cpu_during_waits, True),
    ("SELECT 1 p50 µs", lambda m: m.select1.p50_us, True),
    ("SELECT 1 p99 µs", lambda m: m.select1.p99_us, True),
    ("q/s", lambda m: m.select1_qps, False),
    ("CPU/query µs", lambda m: m.cpu_per_query_us, True),
    ("request p99 ms", lambda m: _request_p99_ms(m), True),
    # The connect phase, in records that have it (None before: the figure is left out).
    ("connect×", lambda m: m.connect.window_factor if m.connect else None, True),
    ("connect hub lag ms", lambda m: m.connect.max_hub_lag_ms if m.connect else None, True),
]


# A celery worker (run --celery) has no wait windows: its probe task's figures C at once.
_TASK_FIGURES: list[tuple[str, Callable, bool]] = [
    ("task queue max s", lambda t: t.at_once.queue_max_s if t.at_once else None, True),
    ("task run max s", lambda t: t.at_once.run_max_s if t.at_once else None, True),
    ("celery runtime max s",
     lambda t: t.at_once.celery_runtime_max_s if t.at_once else None, True),
    ("task hub lag ms", lambda t: max((x.hub_lag_ms for x in (t.alone, t.at_once)
                                       if x is not None and x.hub_lag_ms is not None),
                                      default=None), True),
]


def _probe_task(b: BuildResult | None):
    return next((t for t in b.tasks if t.probe), None) if b is not None else None


def _request_p99_ms(m) -> float | None:
    requests = getattr(m, "requests", None)  # HTTP requests at the workers, when sent
    if requests is None or requests.latency.p99_us is None:
        return None
    return requests.latency.p99_us / 1000


def _key(b: BuildResult) -> str:
    """A build row's name; a version matrix has one row per build and version set."""
    versions = getattr(b, "versions", None)
    if not versions:
        return b.build
    return f"{b.build} @ " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))


def _text(value) -> str:
    return "–" if value is None or value == "" else str(value)


def _diff(what: str, before, after, confounding: bool) -> list[Difference]:
    if before == after:
        return []
    return [Difference(what, _text(before), _text(after), confounding)]


def _run_differences(a: RunResult, b: RunResult) -> list[Difference]:
    out: list[Difference] = []
    wa = (a.profile or {}).get("workload") or {}
    wb = (b.profile or {}).get("workload") or {}
    for key in sorted(set(wa) | set(wb)):
        # Timeouts only bound a run; they change no figure.
        confounding = not key.endswith(("timeout_ms", "timeout_s"))
        out += _diff(f"workload.{key}", wa.get(key), wb.get(key), confounding)
    ta = (a.profile or {}).get("thresholds") or {}
    tb = (b.profile or {}).get("thresholds") or {}
    for key in sorted(set(ta) | set(tb)):
        out += _diff(f"thresholds.{key}", ta.get(key), tb.get(key), True)
    ea, eb = a.environment or {}, b.environment or {}
    out += _diff("CPUs", ea.get("cpu_count"), eb.get("cpu_count"), True)
    out += _diff("architecture", ea.get("machine"), eb.get("machine"), True)
    out += _diff("--preload", a.preload, b.preload, False)
    out += _diff("Python", ea.get("python"), eb.get("python"), False)
    out += _diff("kernel", ea.get("kernel"), eb.get("kernel"), False)
    pa, pb = ea.get("packages") or {}, eb.get("packages") or {}
    for name in sorted(set(pa) | set(pb)):
        out += _diff(f"installed {name}", pa.get(name), pb.get(name), False)
    sa, sb = a.server or {}, b.server or {}
    out += _diff("PostgreSQL", sa.get("version"), sb.get("version"), False)
    out += _diff("embedded server", sa.get("embedded"), sb.get("embedded"), False)
    out += _diff("geventprobe", a.tool_version, b.tool_version, False)
    return out


def _fact_differences(a: BuildResult, b: BuildResult) -> list[Difference]:
    fa, fb = a.facts or {}, b.facts or {}
    out: list[Difference] = []
    for driver in ("psycopg", "psycopg2"):
        da, db = fa.get(driver) or {}, fb.get(driver) or {}
        for key in sorted(set(da) | set(db)):
            out += _diff(f"{driver} {key}", da.get(key), db.get(key), False)
    for key, label in (("gevent", "gevent"), ("greenlet", "greenlet"), ("gunicorn", "gunicorn"),
                       ("psycogreen", "psycogreen"), ("python", "Python"),
                       ("select_patched", "select patched"),
                       ("driver_imported_in_master", "driver imported in the gunicorn master")):
        out += _diff(label, fa.get(key), fb.get(key), False)
    ia, ib = fa.get("driver_import") or {}, fb.get("driver_import") or {}
    out += _diff("select patched when the driver was imported", ia.get("select_patched"),
                 ib.get("select_patched"), False)
    for key in sorted(set(fa.get("env") or {}) | set(fb.get("env") or {})):
        out += _diff(f"env {key}", (fa.get("env") or {}).get(key),
                     (fb.get("env") or {}).get(key), False)
    # run --app --route: a route's verdict, where both runs probed it.
    ra, rb = {r.route: r for r in a.routes}, {r.route: r for r in b.routes}
    for route in [r for r in ra if r in rb]:
        out += _diff(f"route {route}", ra[route].verdict.value, rb[route].verdict.value, False)
    # run --celery --task: a task's verdict, where both runs ran it.
    ka, kb = {t.task: t for t in a.tasks}, {t.task: t for t in b.tasks}
    for task in [t for t in ka if t in kb]:
        out += _diff(f"task {task}", ka[task].verdict.value, kb[task].verdict.value, False)
    return out


def _change(before: Verdict | None, after: Verdict | None) -> str:
    if before is None:
        return "added"
    if after is None:
        return "removed"
    if before == after:
        return "unchanged"
    if before in _FAULTS and after is Verdict.OK:
        return "fixed"
    if before is Verdict.OK and after in _FAULTS:
        return "regressed"
    return "changed"


def _build_change(name: str, a: BuildResult | None, b: BuildResult | None) -> BuildChange:
    figures = []
    ma = a.metrics if a else None
    mb = b.metrics if b else None
    for label, get, lower in _FIGURES:
        before = get(ma) if ma is not None else None
        after = get(mb) if mb is not None else None
        if before is not None or after is not None:
            figures.append(FigureChange(label, before, after, lower))
    ta, tb = _probe_task(a), _probe_task(b)
    for label, get, lower in _TASK_FIGURES if ta is not None or tb is not None else ():
        before = get(ta) if ta is not None else None
        after = get(tb) if tb is not None else None
        if before is not None or after is not None:
            figures.append(FigureChange(label, before, after, lower))
    return BuildChange(
        build=name, before=a.verdict if a else None, after=b.verdict if b else None,
        change=_change(a.verdict if a else None, b.verdict if b else None),
        figures=figures, facts=_fact_differences(a, b) if a and b else [],
        baseline=(a or b).baseline)


def _label(r: RunResult) -> str:
    return f"{r.started_at}: {' '.join(r.command)}"


def _summary(builds: list[BuildChange], refused: str | None, forced: bool) -> str:
    if refused and not forced:
        return f"not compared: {refused}"
    parts = []
    for kind in ("fixed", "regressed", "changed"):
        hit = [f"{b.build} {b.before} → {b.after}" for b in builds if b.change == kind]
        if hit:
            parts.append(f"{kind}: " + ", ".join(hit))
    if not parts:
        parts.append("every build in both runs kept its verdict")
    if forced and refused:
        parts.append(f"compared anyway although {refused}")
    return "; ".join(parts)


def _kind(r: RunResult) -> str:
    """What a run probed, in words."""
    kind = kinds.report_of(r)
    if kind is not None:
        return kind.probed
    return "a gunicorn app" if r.app else "the built-in driver builds"


def compare(before: RunResult, after: RunResult, *, force: bool = False) -> Comparison:
    """Compare two runs; ``refused`` says why they should not be (``force`` compares anyway).

    Raises ProbeError (one line, ``--force`` or not) for runs with nothing to compare: of
    different kinds (a celery worker and the driver builds), or with no build in common (a
    forced comparison of them said "every build kept its verdict", exit 0).
    """
    differences = _run_differences(before, after)
    a = {_key(b): b for b in before.builds}
    b = {_key(b): b for b in after.builds}
    names = list(a) + [n for n in b if n not in a]
    common = [n for n in names if n in a and n in b]
    if _kind(before) != _kind(after):
        raise ProbeError(f"the two runs probed different things (the first {_kind(before)}, "
                         f"the second {_kind(after)}): compare two runs of the same kind")
    if not common:
        raise ProbeError("the two runs have no build in common (the first: "
                         f"{', '.join(a) or 'none'}; the second: {', '.join(b) or 'none'}): "
                         "compare two runs of the same builds")
    refused = None
    confounders = [d for d in differences if d.confounding]
    if confounders:
        refused = ("the runs differ in " + ", ".join(
            f"{d.what} ({d.before} → {d.after})" for d in confounders)
            + ", so a changed figure could come from that rather than from what you changed")
    builds = [_build_change(n, a.get(n), b.get(n)) for n in names]
    return Comparison(before=_label(before), after=_label(after), differences=differences,
                      refused=refused, forced=force and refused is not None, builds=builds,
                      summary=_summary(builds, refused, force))
