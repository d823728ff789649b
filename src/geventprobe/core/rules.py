"""The verdict rules: figures in, class out, every rule stated with its numbers.

Pure functions of recorded figures, so they are tested exactly on recorded runs.
BLOCKING is decided before BUSY-WAIT: a hub that never runs is the worse fault,
and its CPU figure is still reported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from geventprobe.errors import EXIT_FINDINGS, EXIT_INCONCLUSIVE, EXIT_OK, EXIT_USAGE
from geventprobe.record import (
    BuildMetrics,
    BuildResult,
    Calibration,
    ConnectFigures,
    Evidence,
    Verdict,
)
from geventprobe.settings import Thresholds


def evidence(m: BuildMetrics, t: Thresholds) -> list[Evidence]:
    """Each rule applied to ``m``, fired or not."""
    lag_limit_ms = t.blocking_hub_lag_fraction * m.wait_seconds * 1000
    rules = [
        Evidence(
            rule="wait-factor",
            value=m.wait_factor,
            threshold=t.blocking_wait_factor,
            fired=m.wait_factor >= t.blocking_wait_factor,
            text=_wait_factor_text(m, t),
        ),
        Evidence(
            rule="hub-lag",
            value=m.max_hub_lag_ms,
            threshold=lag_limit_ms,
            fired=m.max_hub_lag_ms >= lag_limit_ms,
            text=(f"max hub lag during the waits {m.max_hub_lag_ms:.1f} ms "
                  f"(limit {lag_limit_ms:.0f} ms = {t.blocking_hub_lag_fraction:g}·w)"),
        ),
    ]
    if m.cpu_during_waits is not None:
        rules.append(Evidence(
            rule="cpu-during-waits",
            value=m.cpu_during_waits,
            threshold=t.busy_wait_cpu,
            fired=m.cpu_during_waits >= t.busy_wait_cpu,
            text=(f"worker CPU while the server slept {m.cpu_during_waits:.3f} CPU-s/s "
                  f"(limit {t.busy_wait_cpu:g}; healthy ≈ 0.01–0.09, spinning up to 1.0)"),
        ))
    if m.runnable_during_waits is not None and m.sleeps_per_s_during_waits is not None:
        spinning = (m.runnable_during_waits >= t.busy_wait_runnable
                    and m.sleeps_per_s_during_waits <= t.busy_wait_max_sleeps)
        rules.append(Evidence(
            rule="runnable-during-waits",
            value=m.runnable_during_waits,
            threshold=t.busy_wait_runnable,
            fired=spinning,
            text=(f"worker runnable (on a CPU or queued for one) {m.runnable_during_waits:.0%} "
                  f"of the time and asleep {m.sleeps_per_s_during_waits:.0f}×/s while the "
                  f"server slept (limits ≥ {t.busy_wait_runnable:.0%} and ≤ "
                  f"{t.busy_wait_max_sleeps:g}×/s; a healthy worker sleeps in epoll about once "
                  "per heartbeat, a spinning one never)"),
        ))
    if m.cpu_while_idle is not None:
        # The same limit as in the waits: measured, idle connections cost 0.03–0.084
        # CPU-s/s in every build (the heartbeat's floor), the idle-spin control 0.56 (the
        # busiest of 4 workers on 2 cores) to 1.02 (docs/field-facts.md, "Idle connections
        # do not spin").
        rules.append(Evidence(
            rule="cpu-while-idle", phase="idle",
            value=m.cpu_while_idle,
            threshold=t.busy_wait_cpu,
            fired=m.cpu_while_idle >= t.busy_wait_cpu,
            text=(f"worker CPU while its {m.greenlets} connections sat open and idle "
                  f"{m.cpu_while_idle:.3f} CPU-s/s (limit {t.busy_wait_cpu:g}; measured "
                  "0.03–0.08 for every build, 0.56–1.0 for a worker polling idle sockets)"),
        ))
    if m.connect is not None:
        rules += connect_evidence(m.connect, m.greenlets, t)
    return rules


def _wait_factor_text(m: BuildMetrics, t: Thresholds) -> str:
    unit = "(w + RTT)" if m.rtt_ms else "w"
    if m.wait_called_off:
        # The window was cut short once both rules were decided (worker/probe.py).
        return (f"{m.greenlets} concurrent pg_sleep({m.wait_seconds:g}) had taken "
                f"{m.wait_factor:.2f}× {unit} with the hub stopped when the "
                f"{m.wait_called_off} still waiting were called off (limit "
                f"{t.blocking_wait_factor:g}×; {m.greenlets:d}× if they all ran one at a time)")
    return (f"{m.greenlets} concurrent pg_sleep({m.wait_seconds:g}) took "
            f"{m.wait_factor:.2f}× {unit} (limit "
            f"{t.blocking_wait_factor:g}×; {m.greenlets:d}× if they ran one at a time)")


def connect_evidence(c: ConnectFigures, greenlets: int, t: Thresholds) -> list[Evidence]:
    """The connect phase's rule: the hub stalled for (nearly) a whole connect window while
    the greenlets connected, i.e. the connects waited in C one after another.

    There is no absolute hub-lag rule here, unlike the waits: connecting costs the worker
    CPU (and the server a fork per connection), and a cooperating worker was measured with a
    single 84 ms stall in one round on loopback, past the waits' 75 ms limit, while its stall
    share stayed under 0.55; a blocked one never fell under 0.97 (docs/connect-phase.md).
    """
    connects = c.connects or greenlets
    if c.stall_share is None:
        return [Evidence(
            rule="connect-stall", phase="connect", value=0.0, threshold=t.connect_stall_share,
            fired=False,
            text=(f"{connects} connects at once took {c.window_ms:.1f} ms, "
                  f"too short to judge (under {t.connect_min_window_ms:g} ms): --rtt makes "
                  "connects cost what they cost against a remote server"))]
    return [Evidence(
        rule="connect-stall", phase="connect", value=c.stall_share,
        threshold=t.connect_stall_share, fired=c.stall_share >= t.connect_stall_share,
        text=(f"the hub stalled for {c.stall_share:.0%} of a connect window "
              f"(limit {t.connect_stall_share:.0%}; {connects} connects at once took "
              f"{c.window_ms:.1f} ms, one alone {c.single_ms:.1f} ms, max hub lag "
              f"{c.max_hub_lag_ms:.1f} ms)"))]


BLOCKING_RULES = frozenset({"wait-factor", "hub-lag", "connect-stall"})
BUSY_WAIT_RULES = frozenset({"cpu-during-waits", "runnable-during-waits", "cpu-while-idle"})


def classify(rules: Sequence[Evidence]) -> Verdict:
    """BLOCKING if a blocking rule fired, else BUSY-WAIT if a CPU rule fired, else OK."""
    fired = {e.rule for e in rules if e.fired}
    if fired & BLOCKING_RULES:
        return Verdict.BLOCKING
    if fired & BUSY_WAIT_RULES:
        return Verdict.BUSY_WAIT
    return Verdict.OK


def baseline_mismatches(builds: Sequence[BuildResult]) -> list[BuildResult]:
    """Baselines that ran but did not get their known class: the detector cannot be trusted."""
    return [b for b in builds
            if b.baseline and b.verdict not in (Verdict.UNAVAILABLE, Verdict.ERROR)
            and b.verdict.value != b.expected]


def distrust(builds: Sequence[BuildResult]) -> str | None:
    """Why no verdict of this run can be trusted, judged by its own baselines; or None.

    A cooperating baseline (psycopg2-green) judged BLOCKING or BUSY-WAIT means the machine
    was too busy to tell a blocked driver from a starved worker (saturation); a blocking
    baseline (psycopg2) not judged BLOCKING means the detector is not seeing.
    """
    reasons = []
    for b in baseline_mismatches(builds):
        fired = ", ".join(short(e) for e in b.evidence if e.fired) or "no rule fired"
        if b.expected == Verdict.OK.value:
            load = b.metrics.foreign_busy if b.metrics else None
            busy = (f"; other programs kept {load:.0%} of the cores busy" if load is not None
                    else "")
            reasons.append(f"the cooperating baseline {b.build} got {b.verdict} ({fired}{busy}): "
                           "the machine is too saturated to tell a blocked or spinning driver "
                           "from a starved worker; rerun on a quieter machine")
        else:
            reasons.append(f"the blocking baseline {b.build} got {b.verdict} instead of "
                           f"{b.expected} ({fired}): the detector is not seeing")
    return "; ".join(reasons) or None


def short(e: Evidence) -> str:
    """A rule that fired, in a few words: ``hub lag 108.8 ms ≥ 75 ms``."""
    return {
        "wait-factor": f"wait× {e.value:.2f} ≥ {e.threshold:g}",
        "hub-lag": f"hub lag {e.value:.1f} ms ≥ {e.threshold:.0f} ms",
        "cpu-during-waits": f"CPU in waits {e.value:.3f} ≥ {e.threshold:g}",
        "cpu-while-idle": f"CPU while idle {e.value:.3f} ≥ {e.threshold:g}",
        "runnable-during-waits": f"runnable {e.value:.0%} ≥ {e.threshold:.0%} and never asleep",
        "connect-stall": f"hub stalled {e.value:.0%} of a connect window ≥ {e.threshold:.0%}",
    }.get(e.rule, e.text)


def withhold(builds: Sequence[BuildResult], reason: str) -> list[BuildResult]:
    """Replace the verdicts of the builds under test by INCONCLUSIVE, keeping their evidence.

    A baseline that missed its class keeps what it got, but its cause becomes ``reason``:
    the driver's own explanation would blame a driver that did nothing wrong.
    """
    missed = {b.build for b in baseline_mismatches(builds)}
    out = []
    for b in builds:
        if b.build in missed:
            b = dataclasses.replace(b, cause=reason, advice="rerun on a quieter machine")
        if not b.baseline and b.verdict in (Verdict.OK, Verdict.BLOCKING, Verdict.BUSY_WAIT):
            b = dataclasses.replace(
                b, verdict=Verdict.INCONCLUSIVE,
                cause=f"the rules said {b.verdict}, but {reason}",
                advice="rerun on a quieter machine (or with fewer --workers); see the evidence")
        out.append(b)
    return out


def settle(builds: Sequence[BuildResult], fail_on: Sequence[str],
           calibration: Calibration | None = None) -> tuple[list[BuildResult], int, list[str]]:
    """The run's final verdicts, exit code and notes: the one place a run is settled.

    A detector that did not see its controls cannot clear (or condemn) anything: when the
    run's baselines, or its calibration, missed their class, every verdict is withheld.
    A run of the calibration controls alone (no rows) exits 0 when they passed, 1 when
    one missed its class, 3 when the machine was too saturated to judge.
    """
    if not builds and calibration is not None:
        code = (EXIT_INCONCLUSIVE if calibration.saturated
                else EXIT_OK if calibration.passed else EXIT_FINDINGS)
        return [], code, []
    reason = distrust(builds)
    if calibration is not None and not calibration.passed:
        reason = f"calibration failed: {calibration.reason}" + (f"; {reason}" if reason else "")
    notes = []
    results = list(builds)
    if reason:
        results = withhold(results, reason)
        notes.append(f"INCONCLUSIVE: {reason}")
    return results, exit_code(results, fail_on=fail_on), notes


def exit_code(builds: Sequence[BuildResult],
              fail_on: Sequence[str] = ("blocking", "busy-wait")) -> int:
    """2 if a probe failed, 3 if inconclusive, 1 for findings, else 0.

    ``fail_on`` (``--fail-on``): the verdicts, in lower case, that count as findings. The
    routes of an app (``--route``) and the tasks of a celery worker (``--task``) count like
    builds: one that could not be measured is a failed probe, a BLOCKING, BUSY-WAIT,
    SERIALIZED or FAILING one a finding.
    """
    if any(b.verdict is Verdict.ERROR for b in builds) or any(
            r.verdict is Verdict.ERROR for b in builds for r in (*b.routes, *b.tasks)):
        return EXIT_USAGE
    if baseline_mismatches(builds) or any(b.verdict is Verdict.INCONCLUSIVE for b in builds):
        return EXIT_INCONCLUSIVE
    tested = [b for b in builds if not b.baseline and b.verdict is not Verdict.UNAVAILABLE]
    if not tested and not any(b.baseline and b.verdict is not Verdict.UNAVAILABLE
                              for b in builds):
        return EXIT_USAGE
    failing = {v for v in (Verdict.BLOCKING, Verdict.BUSY_WAIT, Verdict.SERIALIZED,
                           Verdict.FAILING) if v.value.lower() in fail_on}
    if any(b.verdict in failing for b in tested):
        return EXIT_FINDINGS
    if any(r.verdict in failing for b in tested for r in (*b.routes, *b.tasks)):
        return EXIT_FINDINGS
    return EXIT_OK


def summary(builds: Sequence[BuildResult], code: int) -> str:
    """The verdict sentence of the drivers' rows (the run's exit code is said beside it)."""
    measured = [b for b in builds if b.verdict not in (Verdict.UNAVAILABLE, Verdict.ERROR)]
    tested = [b for b in measured if not b.baseline]
    bad = [b for b in tested if b.verdict in (Verdict.BLOCKING, Verdict.BUSY_WAIT)]
    errors = [b.build for b in builds if b.verdict is Verdict.ERROR]
    missed = baseline_mismatches(builds)
    parts = []
    if errors:
        parts.append(f"probe failed for {', '.join(errors)}")
    if missed:
        parts.append("INCONCLUSIVE: baseline " + ", ".join(
            f"{b.build} got {b.verdict} instead of {b.expected}" for b in missed)
            + " (no verdict of this run can be trusted)")
    withheld = [b.build for b in tested if b.verdict is Verdict.INCONCLUSIVE]
    if withheld:
        parts.append(f"verdicts withheld for {', '.join(withheld)}")
    elif tested:
        if bad:
            parts.append(f"{len(bad)} of {len(tested)} psycopg 3 builds regressed: "
                         + ", ".join(f"{b.build} {b.verdict}" for b in bad))
        else:
            parts.append("psycopg 3 builds under test cooperate with gevent ("
                         + ", ".join(b.build for b in tested) + ")")
    elif not errors:
        parts.append("no psycopg 3 build under test")
    baselines = [b for b in measured if b.baseline]
    if baselines and not missed:
        parts.append("baselines as expected ("
                     + ", ".join(f"{b.build} {b.verdict}" for b in baselines) + ")")
    return "; ".join(parts)
