"""From what the workers reported and the parent sampled, to the figures the rules read.

The workers' reports are ``worker/record.py``'s ``ProbeResult``s, read by field.
"""

from __future__ import annotations

import dataclasses
import statistics

from geventprobe.core.stats import histogram, ratio, summarize
from geventprobe.processes.cpu import CpuSampler
from geventprobe.record import BuildMetrics, ConnectFigures, Ratios, WorkerFigures
from geventprobe.worker.record import ProbeResult

_TIMELINE_BUCKET_S = 0.01


def _lags_in_windows(report: ProbeResult, windows: list[list[float]] | None = None
                     ) -> list[tuple[float, float]]:
    """(due time, lag s) of every heartbeat tick that was due inside one of ``windows``
    (the wait windows unless given)."""
    windows = report.windows if windows is None else windows
    out = []
    for due, lag in zip(report.heartbeat_expected, report.heartbeat_lag):
        if any(a <= due <= b for a, b in windows):
            out.append((due, lag))
    return out


def _connect_figures(report: ProbeResult) -> dict:
    """A worker's connect phase: the single connect, each window's wall and hub lag, ms."""
    connect = report.connect
    if connect is None:
        return {}
    a, b = connect.single
    walls, lags = [], []
    for window in connect.windows:
        walls.append(round((window[1] - window[0]) * 1000, 3))
        worst = max((lag for _, lag in _lags_in_windows(report, [window])), default=0.0)
        lags.append(round(worst * 1000, 3))
    return {"connect_single_ms": round((b - a) * 1000, 3), "connect_windows_ms": walls,
            "connect_hub_lag_ms": lags}


def _timeline(report: ProbeResult) -> list[list[float]]:
    """The worst lag per 10 ms from the first window on, for charts."""
    if not report.windows:
        return []
    origin = report.windows[0][0]
    end = report.windows[-1][1]
    worst: dict[int, float] = {}
    for due, lag in zip(report.heartbeat_expected, report.heartbeat_lag):
        if origin <= due <= end:
            k = int((due - origin) / _TIMELINE_BUCKET_S)
            worst[k] = max(worst.get(k, 0.0), lag)
    return [[round(k * _TIMELINE_BUCKET_S, 3), round(v * 1000, 3)]
            for k, v in sorted(worst.items())]


def _rate_over(cpu: CpuSampler | None, pid: int, windows: list[list[float]],
               metric: str = "cpu") -> float | None:
    """Growth of ``metric`` per wall-second of ``pid`` over ``windows`` (None if not covered)."""
    if cpu is None:
        return None
    used = 0.0
    wall = 0.0
    for a, b in windows:
        seconds = cpu.delta(pid, metric, a, b)
        if seconds is None:
            return None
        used += seconds
        wall += b - a
    return used / wall if wall > 0 else None


def worker_figures(report: ProbeResult, cpu: CpuSampler | None, rtt_ms: float = 0.0
                   ) -> WorkerFigures:
    """One worker's figures from its ``result-<pid>.json`` and the parent's CPU samples.

    ``rtt_ms``: the round trip the ``--rtt`` delay proxy added. Each ``pg_sleep(w)`` then
    costs w + RTT even alone, so the wait factor is the window over w + RTT (1.0 still
    means the sleeps overlapped, G that they ran one at a time).
    """
    w = report.wait_seconds + rtt_ms / 1000
    factors = [(b - a) / w for a, b in report.windows]
    lags = _lags_in_windows(report)
    latencies = report.select1_latencies_us
    s0, s1 = report.select1_window or (0.0, 0.0)
    select_cpu = cpu.cpu_seconds(report.pid, s0, s1) if cpu else None
    delay = _rate_over(cpu, report.pid, report.windows, "run_delay")
    return WorkerFigures(
        pid=report.pid,
        wait_factors=[round(f, 4) for f in factors],
        wait_factor=statistics.median(factors) if factors else 0.0,
        max_hub_lag_ms=max((lag for _, lag in lags), default=0.0) * 1000,
        cpu_during_waits=(busy := _rate_over(cpu, report.pid, report.windows)),
        select1=summarize(latencies),
        select1_qps=len(latencies) / (s1 - s0) if s1 > s0 else 0.0,
        cpu_per_query_us=(select_cpu / len(latencies) * 1e6
                          if select_cpu is not None and latencies else None),
        hub_lag_timeline=_timeline(report),
        runnable_during_waits=(None if busy is None or delay is None else busy + delay),
        sleeps_per_s_during_waits=_rate_over(cpu, report.pid, report.windows, "voluntary"),
        cpu_while_idle=(_rate_over(cpu, report.pid, [report.idle_window])
                        if report.idle_window else None),
        **_connect_figures(report),
    )


def stall_share(f: WorkerFigures, min_window_ms: float = 0.0) -> float | None:
    """Median over a worker's connect rounds of (longest hub stall / window wall time),
    counting only windows of at least ``min_window_ms``; None when none was that long."""
    shares = [lag / wall for wall, lag in zip(f.connect_windows_ms, f.connect_hub_lag_ms)
              if wall >= min_window_ms and wall > 0]
    return statistics.median(shares) if shares else None


def _with_connects(c: ConnectFigures | None, reports: list[ProbeResult]
                   ) -> ConnectFigures | None:
    """``c`` with the connections each window opened (the workers say; 0: not said)."""
    connects = max((r.connect.connects for r in reports if r.connect is not None), default=0)
    return dataclasses.replace(c, connects=connects) if c is not None and connects else c


def connect_metrics(figures: list[WorkerFigures], rtt_ms: float = 0.0,
                    min_window_ms: float = 0.0) -> ConnectFigures | None:
    """The build's connect phase: the worst worker's rounds and stall share."""
    phased = [f for f in figures if f.connect_windows_ms]
    if not phased:
        return None
    worst = max(phased, key=lambda f: max(f.connect_windows_ms))
    single = statistics.median(f.connect_single_ms for f in phased
                               if f.connect_single_ms is not None)
    window = max(worst.connect_windows_ms)
    shares = [s for f in phased if (s := stall_share(f, min_window_ms)) is not None]
    return ConnectFigures(
        single_ms=round(single, 3),
        window_ms=window,
        window_factor=round(window / single, 3) if single > 0 else 0.0,
        max_hub_lag_ms=max(max(f.connect_hub_lag_ms) for f in phased),
        rounds=len(worst.connect_windows_ms),
        rtt_ms=rtt_ms,
        window_ms_rounds=list(worst.connect_windows_ms),
        stall_share=round(max(shares), 4) if shares else None,
    )


def build_metrics(reports: list[ProbeResult], figures: list[WorkerFigures],
                  cpu: CpuSampler | None,
                  greenlets: int, *, rtt_ms: float = 0.0, min_connect_window_ms: float = 0.0
                  ) -> BuildMetrics:
    """Summarise the workers: the worst worker decides the wait evidence, samples are pooled."""
    w = reports[0].wait_seconds
    latencies = [v for r in reports for v in r.select1_latencies_us]
    cpus = [f.cpu_during_waits for f in figures if f.cpu_during_waits is not None]
    idle = [f.cpu_while_idle for f in figures if f.cpu_while_idle is not None]
    # The worker that wanted a CPU the most, and how often it went to sleep meanwhile.
    busiest = max((f for f in figures if f.runnable_during_waits is not None),
                  key=lambda f: f.runnable_during_waits, default=None)
    select_cpu = ([cpu.cpu_seconds(r.pid, *(r.select1_window or (0.0, 0.0))) for r in reports]
                  if cpu else [])
    total_cpu = sum(c for c in select_cpu if c is not None) if select_cpu else None
    all_windows = [win for r in reports for win in r.windows]
    machine_busy = foreign_busy = None
    if cpu is not None and all_windows:
        start, end = min(a for a, _ in all_windows), max(b for _, b in all_windows)
        machine_busy = cpu.machine_busy(start, end)
        ours = [cpu.cpu_seconds(r.pid, start, end) for r in reports]
        if machine_busy is not None and None not in ours and end > start:
            # What the rest of the machine (other programs, PostgreSQL) kept the cores busy
            # with: a spinning worker makes the machine busy too, but that is the finding.
            cores = cpu.cores
            foreign_busy = max(0.0, machine_busy - sum(ours) / ((end - start) * cores))
    return BuildMetrics(
        workers=len(reports),
        greenlets=greenlets,
        wait_seconds=w,
        wait_rounds=len(reports[0].windows),
        wait_factor=max(f.wait_factor for f in figures),
        max_hub_lag_ms=max(f.max_hub_lag_ms for f in figures),
        cpu_during_waits=max(cpus) if cpus else None,
        cpu_during_waits_median=statistics.median(cpus) if cpus else None,
        machine_busy=machine_busy,
        select1=summarize(latencies),
        select1_qps=sum(f.select1_qps for f in figures),
        cpu_per_query_us=(total_cpu / len(latencies) * 1e6
                          if total_cpu is not None and latencies else None),
        latency_histogram=histogram(latencies),
        foreign_busy=foreign_busy,
        runnable_during_waits=busiest.runnable_during_waits if busiest else None,
        sleeps_per_s_during_waits=busiest.sleeps_per_s_during_waits if busiest else None,
        connect=_with_connects(connect_metrics(figures, rtt_ms, min_connect_window_ms), reports),
        rtt_ms=rtt_ms,
        cpu_while_idle=max(idle) if idle else None,
        wait_called_off=max((n for r in reports for n in r.called_off), default=0),
    )


def versus(build: BuildMetrics, baseline: BuildMetrics, name: str) -> Ratios:
    """``build`` relative to ``baseline`` (>1: the build is slower / uses more)."""
    return Ratios(
        baseline=name,
        p50=ratio(build.select1.p50_us, baseline.select1.p50_us),
        p99=ratio(build.select1.p99_us, baseline.select1.p99_us),
        qps=ratio(build.select1_qps, baseline.select1_qps),
        cpu_per_query=ratio(build.cpu_per_query_us, baseline.cpu_per_query_us),
    )
