"""What each round of the evidence adds: the calibration controls' margins with fewer rounds.

Runs the calibration controls (``core/calibrate.controls``: BLOCKING, BUSY-WAIT and OK
setups with a known class) in real gunicorn gevent workers, R times, every other time
with a CPU hog per core, at the profile's full rounds; keeps every worker's figures per
round (each connect window's stall share, each wait window's wait factor, hub lag, CPU,
runnable time and sleeps, the idle window's CPU over its first 0.1 / 0.15 / 0.25 s) and
prints, per class and load, the smallest margin of each rule from its threshold if the
probe had measured only the first k rounds (and an idle window that long): what more
rounds or a longer window add to the verdict. A margin is the deciding figure over its
threshold (> 1 is right; for OK, the threshold over the figure of the rule closest to
firing, the way ``calibrate._margin`` reads it).

    .venv/bin/python benchmarks/rounds.py [--runs 10] [--json rounds.json]

Each run of all the controls takes the machine's timing lock (``--lock``) for itself only.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

import psutil
import timing_lock

from geventprobe.app.wsgi_run import run_workers
from geventprobe.core import builds, calibrate, metrics
from geventprobe.core.builds import BY_NAME
from geventprobe.processes import children, gunicorn_workers
from geventprobe.processes.postgres import EmbeddedPostgres
from geventprobe.settings import Thresholds, Workload

HOG = "while True: pass"
IDLE_LENGTHS = (0.1, 0.15, 0.25)


def _lag(report, window) -> float:
    a, b = window
    return max((lag for due, lag in zip(report.heartbeat_expected, report.heartbeat_lag)
                if a <= due <= b), default=0.0)


def worker_rounds(report, cpu, w: float) -> dict:
    """One worker's figures, round by round."""
    out = {"connect": [], "waits": [], "idle": {}}
    if report.connect:
        for a, b in report.connect.windows:
            wall = b - a
            out["connect"].append({"ms": wall * 1000, "share": _lag(report, (a, b)) / wall})
    for a, b in report.windows:
        used = cpu.delta(report.pid, "cpu", a, b)
        delay = cpu.delta(report.pid, "run_delay", a, b)
        sleeps = cpu.delta(report.pid, "voluntary", a, b)
        out["waits"].append({
            "factor": (b - a) / w, "lag_ms": _lag(report, (a, b)) * 1000, "wall": b - a,
            "cpu": used, "delay": delay, "sleeps": sleeps})
    if report.idle_window:
        i0, i1 = report.idle_window
        for length in IDLE_LENGTHS:
            if i0 + length <= i1 + 1e-3:
                used = cpu.delta(report.pid, "cpu", i0, min(i1, i0 + length))
                out["idle"][str(length)] = None if used is None else used / length
    return out


def margins(controls: list[dict], t: Thresholds, w: float, k_connect: int, k_waits: int,
            idle: float) -> dict[str, float | None]:
    """Per control, the margin the calibration would have read with k rounds of each."""
    lag_limit = t.blocking_hub_lag_fraction * w * 1000
    out = {}
    for c in controls:
        rules: dict[str, list[float]] = {}  # rule: [value, threshold] of the build
        shares, factors, lags, cpus, runnables, idles = [], [], [], [], [], []
        for wk in c["workers"]:
            judged = [r["share"] for r in wk["connect"][:k_connect]
                      if r["ms"] >= t.connect_min_window_ms]
            if judged:
                shares.append(statistics.median(judged))
            rounds = wk["waits"][:k_waits]
            if rounds:
                factors.append(statistics.median(r["factor"] for r in rounds))
                lags.append(max(r["lag_ms"] for r in rounds))
                wall = sum(r["wall"] for r in rounds)
                if all(r["cpu"] is not None for r in rounds):
                    busy = sum(r["cpu"] for r in rounds) / wall
                    cpus.append(busy)
                    if all(r["delay"] is not None and r["sleeps"] is not None for r in rounds):
                        runnables.append((busy + sum(r["delay"] for r in rounds) / wall,
                                          sum(r["sleeps"] for r in rounds) / wall))
            if wk["idle"].get(str(idle)) is not None:
                idles.append(wk["idle"][str(idle)])
        if factors:
            rules["wait-factor"] = [max(factors), t.blocking_wait_factor]
            rules["hub-lag"] = [max(lags), lag_limit]
        if cpus:
            rules["cpu-during-waits"] = [max(cpus), t.busy_wait_cpu]
        if runnables:
            run, sleeps = max(runnables)
            spinning = sleeps <= t.busy_wait_max_sleeps
            # Fired only with few sleeps: a healthy worker's runnable time is no alarm.
            rules["runnable-during-waits"] = [run if spinning else 0.0, t.busy_wait_runnable]
        if shares:
            rules["connect-stall"] = [max(shares), t.connect_stall_share]
        if idles:
            rules["cpu-while-idle"] = [max(idles), t.busy_wait_cpu]
        expected = c["expected"]
        if expected == "BLOCKING":
            names = ["connect-stall"] if c["connect_only"] else ["wait-factor", "hub-lag",
                                                                  "connect-stall"]
        elif expected == "BUSY-WAIT":
            names = ["cpu-during-waits", "runnable-during-waits", "cpu-while-idle"]
        else:
            names = None
        if names is not None:
            ratios = [rules[r][0] / rules[r][1] for r in names if r in rules]
            out[c["control"]] = max(ratios) if ratios else None
        else:
            ratios = [v[1] / v[0] if v[0] > 0 else float("inf") for v in rules.values()]
            out[c["control"]] = min(ratios) if ratios else None
    return out


def run_controls(dsn: str, todo, workload: Workload, thresholds: Thresholds) -> list[dict]:
    """Every control once, one after another, each with its workers' rounds."""
    out = []
    for control in todo:
        build = BY_NAME[control.build]
        env = dict(build.env, GEVENTPROBE_BUILD=build.name, **control.env)
        run = run_workers(gunicorn_workers.boot(env, workload, dsn, control.preload,
                                                thresholds=thresholds), workload, dsn)
        gunicorn_workers.finish_previous()
        if run.error or not run.results or any(r.error for r in run.results):
            print(f"  {control.name}: {run.error or [r.error for r in run.results]}",
                  file=sys.stderr)
            continue
        figures = [metrics.worker_figures(r, run.cpu) for r in run.results]
        out.append({"control": control.name, "expected": control.expected.value,
                    "connect_only": control.connect_only,
                    "busy": run.cpu.machine_busy(
                        min(r.windows[0][0] for r in run.results),
                        max(r.windows[-1][1] for r in run.results)),
                    "workers": [worker_rounds(r, run.cpu, workload.wait_seconds)
                                for r in run.results],
                    "wait_factor": max(f.wait_factor for f in figures)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--greenlets", type=int, default=16)
    parser.add_argument("--json", help="keep every control's rounds in this file")
    parser.add_argument("--lock", default=timing_lock.DEFAULT,
                        help="the timing lock taken for each run ('' for none)")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {psutil.cpu_count()} cores, {platform.platform()}, "
          f"Python {platform.python_version()}")
    workload = Workload(workers=args.workers, greenlets=args.greenlets, http_rate=0.0,
                        connect_rounds=3, wait_rounds=3, idle_seconds=max(IDLE_LENGTHS))
    thresholds = Thresholds()
    todo = calibrate.controls(builds.check(list(builds.BUILDS)))
    runs: list[dict] = []
    try:
        with EmbeddedPostgres(max_connections=2 * workload.connections() + 10) as pg:
            for i in range(args.runs):
                loaded = i % 2 == 1
                with timing_lock.held(args.lock):
                    hogs = [children.spawn([sys.executable, "-c", HOG])
                            for _ in range(psutil.cpu_count() if loaded else 0)]
                    try:
                        t = time.monotonic()
                        controls = run_controls(pg.dsn, todo, workload, thresholds)
                    finally:
                        for hog in hogs:
                            children.stop(hog)
                runs.append({"loaded": loaded, "controls": controls})
                print(f"run {i + 1:2d} {'loaded  ' if loaded else 'unloaded'} "
                      f"{time.monotonic() - t:5.1f} s, {len(controls)} controls", flush=True)
    finally:
        gunicorn_workers.finish_previous()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f)
    report(runs, thresholds, workload.wait_seconds)


def report(runs: list[dict], thresholds: Thresholds, w: float) -> None:
    """The smallest margin per class and load, for each number of rounds."""
    print("\nsmallest margin (and median) per class, by rounds measured "
          "(connect rounds / wait rounds / idle window s):")
    variants = [(3, 3, 0.25), (2, 3, 0.25), (1, 3, 0.25), (3, 2, 0.25), (3, 1, 0.25),
                (3, 3, 0.15), (3, 3, 0.1), (2, 2, 0.15), (2, 2, 0.1), (1, 2, 0.1),
                (2, 1, 0.1), (1, 1, 0.1)]
    for kc, kw, idle in variants:
        cells = []
        for loaded in (False, True):
            by_class: dict[str, list[float]] = {}
            for r in runs:
                if r["loaded"] != loaded:
                    continue
                m = margins(r["controls"], thresholds, w, kc, kw, idle)
                for c in r["controls"]:
                    if m.get(c["control"]) is not None:
                        by_class.setdefault(c["expected"], []).append(m[c["control"]])
            cells.append("  ".join(
                f"{e[:5]} {min(v):5.2f} ({statistics.median(v):5.2f})"
                for e, v in sorted(by_class.items())))
        print(f"  {kc}/{kw}/{idle:<4}  unloaded: {cells[0]}\n{'':13}  loaded:   {cells[1]}")


if __name__ == "__main__":
    main()
