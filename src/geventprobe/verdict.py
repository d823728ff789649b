"""The verdict rules: figures in, class out, every rule stated with its numbers.

Pure functions of recorded figures, so they are tested exactly on recorded runs.
BLOCKING is decided before BUSY-WAIT: a hub that never runs is the worse fault,
and its CPU figure is still reported.
"""

from __future__ import annotations

from collections.abc import Sequence

from geventprobe.config import Thresholds
from geventprobe.errors import EXIT_FINDINGS, EXIT_INCONCLUSIVE, EXIT_OK, EXIT_USAGE
from geventprobe.model import BuildMetrics, BuildResult, Evidence, Verdict


def evidence(m: BuildMetrics, t: Thresholds) -> list[Evidence]:
    """Each rule applied to ``m``, fired or not."""
    lag_limit_ms = t.blocking_hub_lag_fraction * m.wait_seconds * 1000
    rules = [
        Evidence(
            rule="wait-factor",
            value=m.wait_factor,
            threshold=t.blocking_wait_factor,
            fired=m.wait_factor >= t.blocking_wait_factor,
            text=(f"{m.greenlets} concurrent pg_sleep({m.wait_seconds:g}) took "
                  f"{m.wait_factor:.2f}× w (limit {t.blocking_wait_factor:g}×; "
                  f"{m.greenlets:d}× if they ran one at a time)"),
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
                  f"(limit {t.busy_wait_cpu:g}; healthy ≈ 0.01, spinning up to 1.0)"),
        ))
    return rules


def classify(rules: Sequence[Evidence]) -> Verdict:
    """BLOCKING if a blocking rule fired, else BUSY-WAIT if the CPU rule fired, else OK."""
    fired = {e.rule for e in rules if e.fired}
    if fired & {"wait-factor", "hub-lag"}:
        return Verdict.BLOCKING
    if "cpu-during-waits" in fired:
        return Verdict.BUSY_WAIT
    return Verdict.OK


def baseline_mismatches(builds: Sequence[BuildResult]) -> list[BuildResult]:
    """Baselines that ran but did not get their known class: the detector cannot be trusted."""
    return [b for b in builds
            if b.baseline and b.verdict not in (Verdict.UNAVAILABLE, Verdict.ERROR)
            and b.verdict.value != b.expected]


def exit_code(builds: Sequence[BuildResult]) -> int:
    """2 if a probe failed, 3 if a baseline missed its class, 1 for findings, else 0."""
    if any(b.verdict is Verdict.ERROR for b in builds):
        return EXIT_USAGE
    if baseline_mismatches(builds):
        return EXIT_INCONCLUSIVE
    tested = [b for b in builds if not b.baseline and b.verdict is not Verdict.UNAVAILABLE]
    if not tested and not any(b.baseline and b.verdict is not Verdict.UNAVAILABLE
                              for b in builds):
        return EXIT_USAGE
    if any(b.verdict in (Verdict.BLOCKING, Verdict.BUSY_WAIT) for b in tested):
        return EXIT_FINDINGS
    return EXIT_OK


def summary(builds: Sequence[BuildResult], code: int) -> str:
    """The one-line summary."""
    tested = [b for b in builds if not b.baseline and b.verdict is not Verdict.UNAVAILABLE]
    bad = [b for b in tested if b.verdict in (Verdict.BLOCKING, Verdict.BUSY_WAIT)]
    errors = [b.build for b in builds if b.verdict is Verdict.ERROR]
    missed = baseline_mismatches(builds)
    parts = []
    if errors:
        parts.append(f"probe failed for {', '.join(errors)}")
    if missed:
        parts.append("INCONCLUSIVE: baseline " + ", ".join(
            f"{b.build} got {b.verdict} instead of {b.expected}" for b in missed)
            + " (the detector is not seeing; no verdict can be trusted)")
    if tested:
        if bad:
            parts.append(f"{len(bad)} of {len(tested)} psycopg 3 builds regressed: "
                         + ", ".join(f"{b.build} {b.verdict}" for b in bad))
        else:
            parts.append("psycopg 3 builds under test cooperate with gevent ("
                         + ", ".join(b.build for b in tested) + ")")
    elif not errors:
        parts.append("no psycopg 3 build under test")
    baselines = [b for b in builds if b.baseline and b.verdict is not Verdict.UNAVAILABLE]
    if baselines and not missed:
        parts.append("baselines as expected ("
                     + ", ".join(f"{b.build} {b.verdict}" for b in baselines) + ")")
    return "; ".join(parts) + f"; exit {code}"
