"""Calibration: run controls whose class is known, to show the detector sees on this machine.

A verdict of OK means little unless the same machine, server and thresholds
would have said BLOCKING or BUSY-WAIT had the fault been there. Each control is
a real gunicorn gevent run of the harness with one setup changed:

- BLOCKING: psycopg (c or binary) imported before monkey-patching (``--preload``);
  psycopg forced to its C wait (``PSYCOPG_WAIT_FUNC=wait_c``); psycopg2 with no
  wait callback; psycopg's python build imported before patching, BLOCKING only
  in the connect phase (its queries cooperate).
- BUSY-WAIT: psycopg whose wait function is replaced inside the worker by one that
  polls with a zero timeout and ``gevent.sleep(0)`` (worker/controls.py).
- OK: every available healthy build, patched first, and psycopg2 with psycogreen.

Calibration also decides whether the machine was too busy to judge anything:
see ``saturation``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from geventprobe.core import builds
from geventprobe.core.builds import BY_NAME, Build
from geventprobe.core.drivers import HarnessBuild, boot_ahead
from geventprobe.core.progress import Listener
from geventprobe.core.session import Session
from geventprobe.core.target import Probed
from geventprobe.record import BuildResult, Calibration, ControlOutcome, Evidence, Verdict
from geventprobe.settings import Thresholds


@dataclass(frozen=True)
class Control:
    """A run whose true class is known."""

    name: str
    """Short id, e.g. ``preload-binary``."""
    description: str
    build: str
    """The build it runs (see builds.BUILDS)."""
    expected: Verdict
    env: dict = field(default_factory=dict)
    """Environment changed for this control only."""
    preload: bool = False
    connect_only: bool = False
    """Its fault shows in the connect phase alone: a run whose connect windows were too short
    to judge cannot show it (the control did not run, rather than missed)."""


def _first_available(names: Sequence[str], available: dict[str, builds.Availability]
                     ) -> str | None:
    return next((n for n in names if available[n].ok), None)


def controls(available: dict[str, builds.Availability]) -> list[Control]:
    """The controls this machine can run, positive ones first."""
    c_build = _first_available(("binary", "c"), available)
    any_psycopg = _first_available(("binary", "c", "python"), available)
    out: list[Control] = []
    if c_build:
        out.append(Control(f"preload-{c_build}",
                           f"psycopg {c_build} imported in the master before patching (--preload)",
                           c_build, Verdict.BLOCKING, preload=True))
        out.append(Control(f"wait_c-{c_build}", f"psycopg {c_build} with PSYCOPG_WAIT_FUNC=wait_c",
                           c_build, Verdict.BLOCKING, env={"PSYCOPG_WAIT_FUNC": "wait_c"}))
    if available["python"].ok:
        out.append(Control("preload-python-connect",
                           "psycopg python imported in the master before patching (--preload): "
                           "its queries cooperate, its connects stall the hub",
                           "python", Verdict.BLOCKING, preload=True, connect_only=True))
    if available["psycopg2"].ok:
        out.append(Control("psycopg2-no-callback", "psycopg2 without a wait callback",
                           "psycopg2", Verdict.BLOCKING))
    if any_psycopg:
        out.append(Control(f"busy-wait-{any_psycopg}",
                           f"psycopg {any_psycopg} with a wait that polls with a zero timeout "
                           "and gevent.sleep(0)", any_psycopg, Verdict.BUSY_WAIT,
                           env={"GEVENTPROBE_CONTROL": "busy-wait"}))
    for name in ("binary", "c", "python", "psycopg2-green"):
        if available[name].ok:
            out.append(Control(f"healthy-{name}", f"{BY_NAME[name].description}, patched first",
                               name, Verdict.OK))
    return out


def all_builds() -> list[Build]:
    """Every build a control may need (for the import check)."""
    return list(builds.BUILDS)


def _margin(expected: Verdict, rules: Sequence[Evidence]) -> float | None:
    """Distance of the deciding figure from its threshold, as a ratio (>1 is safe).

    For a fault class: the strongest rule of that class (value / threshold). For OK:
    the rule closest to firing (threshold / value).
    """
    if not rules:
        return None
    by_rule = {e.rule: e for e in rules}
    if expected is Verdict.BLOCKING:
        ratios = [e.value / e.threshold for r in ("wait-factor", "hub-lag", "connect-stall")
                  if (e := by_rule.get(r)) and e.threshold > 0]
        return max(ratios) if ratios else None
    if expected is Verdict.BUSY_WAIT:
        ratios = [e.value / e.threshold for r in ("cpu-during-waits", "runnable-during-waits")
                  if (e := by_rule.get(r)) and e.threshold > 0]
        return max(ratios) if ratios else None
    ratios = [e.threshold / e.value if e.value > 0 else float("inf") for e in rules]
    return min(ratios) if ratios else None


def outcome(control: Control, result: BuildResult) -> ControlOutcome:
    """Judge one control from the run of its build."""
    m = result.metrics
    ran = result.verdict not in (Verdict.UNAVAILABLE, Verdict.ERROR)
    error = result.error
    if ran and control.connect_only and m is not None and m.connect is not None \
            and m.connect.stall_share is None:
        ran = False
        error = (f"not judged: its connect windows ({m.connect.window_ms:.0f} ms) were too short "
                 "to tell a stalled hub from a busy one; more --greenlets or --rtt make them "
                 "longer")
    margin = _margin(control.expected, result.evidence) if ran else None
    return ControlOutcome(
        control=control.name, description=control.description, build=control.build,
        expected=control.expected.value, got=result.verdict.value,
        passed=(result.verdict is control.expected) if ran else
        (False if result.verdict is Verdict.ERROR else None),
        wait_factor=m.wait_factor if m else None,
        max_hub_lag_ms=m.max_hub_lag_ms if m else None,
        cpu_during_waits=m.cpu_during_waits if m else None,
        foreign_busy=m.foreign_busy if m else None,
        margin=None if margin is None or margin == float("inf") else round(margin, 3),
        evidence=result.evidence, error=error,
        runnable_during_waits=m.runnable_during_waits if m else None,
        connect_stall_share=m.connect.stall_share if m and m.connect else None,
    )


def saturation(outcomes: Sequence[ControlOutcome], thresholds: Thresholds,
               wait_seconds: float, busy_limit: float = 0.95) -> str | None:
    """Why no verdict can be trusted on this machine right now, or None.

    Signs measured in the controls of the same run:
    - a healthy control's hub lag reached the blocking limit: the heartbeat of a
      cooperating worker could not get a CPU, so a late heartbeat proves nothing;
    - a healthy control was runnable (mostly queued for a CPU) past the busy-wait limit;
    - other programs kept all cores busy (``busy_limit``) while a spinning control
      could not reach the busy-wait limit: a spin would go unseen.
    """
    lag_limit = thresholds.blocking_hub_lag_fraction * wait_seconds * 1000
    healthy = [o for o in outcomes if o.expected == Verdict.OK.value and o.passed is not None]
    lagging = [o for o in healthy if o.max_hub_lag_ms is not None
               and o.max_hub_lag_ms >= lag_limit]
    if lagging:
        o = lagging[0]
        return (f"the machine is saturated: the healthy control {o.control} saw "
                f"{o.max_hub_lag_ms:.0f} ms hub lag (limit {lag_limit:.0f} ms), so hub lag "
                "cannot tell a blocked driver from a starved worker")
    queued = [o for o in healthy if o.runnable_during_waits is not None
              and o.runnable_during_waits >= thresholds.busy_wait_runnable]
    if queued:
        o = queued[0]
        return (f"the machine is saturated: the healthy control {o.control} waited for a CPU "
                f"{o.runnable_during_waits:.0%} of the time (limit "
                f"{thresholds.busy_wait_runnable:.0%}), so a spinning worker cannot be told "
                "from a starved one")
    busy = [o.foreign_busy for o in outcomes if o.foreign_busy is not None]
    spinners = [o for o in outcomes if o.expected == Verdict.BUSY_WAIT.value
                and o.cpu_during_waits is not None
                and o.cpu_during_waits < thresholds.busy_wait_cpu]
    if busy and min(busy) >= busy_limit and spinners:
        return (f"the machine is saturated: other programs kept {min(busy):.0%} of the cores "
                f"busy and the spinning control got only {spinners[0].cpu_during_waits:.2f} "
                "CPU-s/s, so a busy-wait would go unseen")
    return None


def judge(outcomes: list[ControlOutcome], thresholds: Thresholds, wait_seconds: float,
          started: float) -> Calibration:
    """Pass only when every control that ran got its class and each class was covered."""
    saturated = saturation(outcomes, thresholds, wait_seconds)
    ran = [o for o in outcomes if o.passed is not None]
    failed = [o for o in ran if not o.passed]
    covered = {o.expected for o in ran}
    missing = [c.value for c in (Verdict.BLOCKING, Verdict.BUSY_WAIT, Verdict.OK)
               if c.value not in covered]
    if saturated:
        reason = saturated
    elif failed:
        o = failed[0]
        figures = (f"wait× {o.wait_factor:.2f}, hub lag {o.max_hub_lag_ms:.1f} ms, CPU in waits "
                   f"{o.cpu_during_waits:.3f}" if o.wait_factor is not None
                   else (o.error or "no figures"))
        reason = (f"control {o.control} expected {o.expected} but got {o.got} ({figures})"
                  + (f"; {len(failed) - 1} more failed" if len(failed) > 1 else ""))
    elif missing:
        reason = f"no control for {', '.join(missing)} could run here: install the missing builds"
    else:
        reason = f"all {len(ran)} controls got their class: the detector sees on this machine"
    return Calibration(outcomes=outcomes, passed=not saturated and not failed and not missing,
                       saturated=saturated is not None, reason=reason,
                       duration_s=round(time.monotonic() - started, 3))


def run_controls(session: Session, listener: Listener) -> Calibration:
    """Run every calibration control this machine can run, against the session's server."""
    started = time.monotonic()
    todo = controls(session.available())
    # The controls test the in-worker rules; user-visible request latency adds nothing there.
    workload = dataclasses.replace(session.plan.workload, http_rate=0.0)
    outcomes = []
    subjects = boot_ahead(session, [HarnessBuild(BY_NAME[c.build], c.preload,
                                                 extra_env=dict(c.env)) for c in todo], workload)
    for i, (control, subject) in enumerate(zip(todo, subjects)):
        listener.build_started(f"control {control.name}", i, len(todo))
        result = session.probe(subject, workload=workload)
        result = dataclasses.replace(result, build=f"control {control.name}")
        listener.build_finished(result)
        outcomes.append(outcome(control, result))
    return judge(outcomes, session.plan.thresholds, workload.wait_seconds, started)


@dataclass(frozen=True)
class CalibrationOnly:
    """``geventprobe calibrate`` (a ``Target``): the controls are the whole run, no rows."""

    def steps(self) -> int:
        """None besides the controls."""
        return 0

    def prepare(self, listener: Listener) -> CalibrationOnly:
        """Itself: nothing to prepare."""
        return self

    def imports(self) -> Sequence[Build]:
        """Every build a control may need (the plan asks for calibration)."""
        return all_builds()

    def probe(self, session: Session, listener: Listener) -> Probed:
        """No rows: the runner ran the controls already."""
        return Probed([])

    def headline(self, rows: list[BuildResult], code: int,
                 calibration: Calibration | None) -> str:
        """``calibration: <its reason>``."""
        reason = calibration.reason if calibration is not None else "did not run"
        return f"calibration: {reason}"

    def app_record(self) -> dict | None:
        """None: no deployment of the user's."""
        return None
