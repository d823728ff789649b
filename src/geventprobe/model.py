"""The result record every renderer reads: frozen dataclasses, versioned as JSON.

``SCHEMA_VERSION`` changes whenever a field changes meaning or goes away; the
JSON Schema in ``schema/result.schema.json`` describes the serialised form.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

SCHEMA_VERSION = 1


class Verdict(str, Enum):
    """What a build does under gevent."""

    OK = "OK"
    BLOCKING = "BLOCKING"
    BUSY_WAIT = "BUSY-WAIT"
    ERROR = "ERROR"
    UNAVAILABLE = "UNAVAILABLE"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class LatencySummary:
    """Percentiles of recorded samples, in microseconds."""

    count: int
    p50_us: float | None
    p90_us: float | None
    p99_us: float | None
    max_us: float | None
    mean_us: float | None


@dataclass(frozen=True)
class WorkerFigures:
    """One gunicorn worker's figures; the build's figures summarise these."""

    pid: int
    """The worker process."""
    wait_factors: list[float]
    """Wall time of each wait window divided by w (1.0: the sleeps overlapped)."""
    wait_factor: float
    """Median of ``wait_factors``."""
    max_hub_lag_ms: float
    """Latest heartbeat that was due inside a wait window, in ms."""
    cpu_during_waits: float | None
    """Worker CPU-seconds per wall-second over the wait windows (psutil, from the parent)."""
    select1: LatencySummary
    """``SELECT 1`` latency measured inside the greenlets."""
    select1_qps: float
    """``SELECT 1`` queries per second over the loop."""
    cpu_per_query_us: float | None
    """Worker CPU per ``SELECT 1``, in microseconds."""
    hub_lag_timeline: list[list[float]]
    """[seconds since the first window opened, lag in ms], the worst tick per 10 ms."""


@dataclass(frozen=True)
class Ratios:
    """A psycopg 3 build against the psycopg2-green baseline of the same run (build / baseline)."""

    baseline: str
    p50: float | None
    p99: float | None
    qps: float | None
    cpu_per_query: float | None


@dataclass(frozen=True)
class BuildMetrics:
    """The evidence the verdict rests on, summarised over the build's workers."""

    workers: int
    """Workers that reported."""
    greenlets: int
    wait_seconds: float
    """w, the server-side sleep of each query in a window."""
    wait_rounds: int
    wait_factor: float
    """Worst worker's median window wall time / w."""
    max_hub_lag_ms: float
    """Worst heartbeat lag inside a window, over all workers."""
    cpu_during_waits: float | None
    """Highest worker CPU-s per wall-s over the wait windows."""
    cpu_during_waits_median: float | None
    """Median over workers of the same figure."""
    machine_busy: float | None
    """Fraction of all cores busy (whole machine) during the windows."""
    select1: LatencySummary
    """All workers' ``SELECT 1`` samples pooled."""
    select1_qps: float
    """Sum over workers."""
    cpu_per_query_us: float | None
    """All workers' CPU over the loop / all queries."""
    latency_histogram: dict[str, int]
    """``SELECT 1`` latency: lower bound of a log bucket (µs) → samples."""
    vs_baseline: Ratios | None = None


@dataclass(frozen=True)
class Evidence:
    """One verdict rule, with the figures it was decided on."""

    rule: str
    """``wait-factor``, ``hub-lag`` or ``cpu-during-waits``."""
    value: float
    threshold: float
    fired: bool
    text: str
    """The rule in words, with its numbers."""


@dataclass(frozen=True)
class BuildResult:
    """One build's verdict, why, and how to fix it."""

    build: str
    description: str
    baseline: bool
    """True for psycopg2 references, which must get ``expected``."""
    expected: str | None
    verdict: Verdict
    cause: str | None
    """Why, in words computed from the facts (None when OK)."""
    advice: str | None
    """The fix (None when OK)."""
    evidence: list[Evidence]
    facts: dict
    """What the first worker reported about itself (driver, wait function, patching)."""
    metrics: BuildMetrics | None
    workers: list[WorkerFigures]
    error: str | None = None
    install: str | None = None
    """For UNAVAILABLE: the command that makes the build importable."""
    worker_timeouts: int = 0
    """Workers the gunicorn master killed for a blocked hub (``WORKER TIMEOUT``)."""
    duration_s: float = 0.0


@dataclass(frozen=True)
class RunResult:
    """A whole ``geventprobe run``."""

    schema_version: int
    tool_version: str
    started_at: str
    """ISO 8601, UTC."""
    duration_s: float
    command: list[str]
    """The command line, secrets redacted."""
    preload: bool
    profile: dict
    """Workload and thresholds used, and the file they came from."""
    environment: dict
    """The parent's machine and installed versions (the workers' own are in each build's facts)."""
    server: dict
    builds: list[BuildResult]
    summary: str
    exit_code: int
    notes: list[str] = field(default_factory=list)
    """Warnings a reader must see (unstable figures, missing controls...)."""
