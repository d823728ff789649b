"""Accuracy of the verdict rules: repeat `geventprobe calibrate`, half of the runs under load.

Every run classifies the same controls (BLOCKING, BUSY-WAIT and OK setups with a
known class) inside real gunicorn gevent workers. Half of the runs start a CPU
hog first: one busy-looping process per core, at normal priority, stopped when
the run ends. Prints the confusion matrix (expected class → got), the smallest
margin of each class from its threshold, inconclusive (saturated) runs, and the
time per calibrate run. Target: zero misclassifications. Also the idle rule's margin
(``cpu-while-idle``: every control's CPU while its connections sat open and idle; no
control spins there, so it must never fire).

    .venv/bin/python benchmarks/accuracy.py [--runs 20] [--workers 4] [--greenlets 16]

Each calibrate run takes the machine's timing lock (``--lock``, default
``/tmp/gp-timing.lock``) for itself only, hogs included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter

import psutil
import timing_lock

from geventprobe.processes import children
from geventprobe.processes.postgres import EmbeddedPostgres

HOG = "while True: pass"


def calibrate(dsn: str, workers: int, greenlets: int, loaded: bool) -> tuple[dict, float, int]:
    """One `geventprobe calibrate` run; returns its JSON, wall time and exit code."""
    hogs = []
    try:
        if loaded:
            hogs = [children.spawn([sys.executable, "-c", HOG]) for _ in range(psutil.cpu_count())]
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "cal.json")
            env = dict(os.environ, GEVENTPROBE_DSN=dsn)
            t = time.monotonic()
            proc = subprocess.run(
                [sys.executable, "-m", "geventprobe", "calibrate", "--workers", str(workers),
                 "--greenlets", str(greenlets), "--json", out],
                env=env, capture_output=True, text=True, check=False)
            wall = time.monotonic() - t
            if not os.path.exists(out):
                raise SystemExit(f"calibrate failed (exit {proc.returncode}): {proc.stderr}")
            with open(out) as f:
                return json.load(f), wall, proc.returncode
    finally:
        for hog in hogs:
            children.stop(hog)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--greenlets", type=int, default=16)
    parser.add_argument("--lock", default=timing_lock.DEFAULT,
                        help="the timing lock taken for each run ('' for none)")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {psutil.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.platform()}, "
          f"Python {platform.python_version()}")
    print(f"{args.runs} runs of geventprobe calibrate --workers {args.workers} "
          f"--greenlets {args.greenlets}; every other run with {psutil.cpu_count()} CPU hogs")
    confusion: Counter = Counter()
    margins: dict[tuple[str, bool], list[float]] = {}
    connect_margins: dict[tuple[str, bool], list[float]] = {}
    idle_margins: dict[bool, list[float]] = {False: [], True: []}
    idle_values: dict[bool, list[float]] = {False: [], True: []}
    idle_fired = 0
    walls: dict[bool, list[float]] = {False: [], True: []}
    other_load: dict[bool, list[float]] = {False: [], True: []}
    wrong, inconclusive = [], 0
    # One server for all runs: the benchmark measures the rules, not initdb.
    with EmbeddedPostgres(max_connections=2 * args.workers * args.greenlets + 10) as pg:
        for i in range(args.runs):
            loaded = i % 2 == 1
            with timing_lock.held(args.lock):
                result, wall, code = calibrate(pg.dsn, args.workers, args.greenlets, loaded)
            cal = result["calibration"]
            walls[loaded].append(wall)
            inconclusive += bool(cal["saturated"])
            for o in cal["outcomes"]:
                if o["passed"] is None:
                    continue
                confusion[(o["expected"], o["got"])] += 1
                if o["margin"] is not None:
                    margins.setdefault((o["expected"], loaded), []).append(o["margin"])
                # Judged only: a window too short to judge reads 0 (no margin to speak of).
                connect = next((e for e in o["evidence"] if e["rule"] == "connect-stall"
                                and e["threshold"] > 0 and e["value"] > 0), None)
                if connect is not None:
                    # The connect rule's own margin, for every control that ran it.
                    m = (connect["value"] / connect["threshold"] if o["expected"] != "OK"
                         else connect["threshold"] / max(connect["value"], 1e-9))
                    if o["expected"] == "OK" or connect["fired"]:
                        connect_margins.setdefault((o["expected"], loaded), []).append(m)
                idle = next((e for e in o["evidence"] if e["rule"] == "cpu-while-idle"), None)
                if idle is not None:
                    idle_values[loaded].append(idle["value"])
                    idle_margins[loaded].append(idle["threshold"] / max(idle["value"], 1e-9))
                    idle_fired += bool(idle["fired"])
                if o["foreign_busy"] is not None:
                    other_load[loaded].append(o["foreign_busy"])
                if not o["passed"]:
                    wrong.append((i + 1, loaded, o["control"], o["got"], o["wait_factor"],
                                  o["max_hub_lag_ms"], o["cpu_during_waits"]))
            print(f"run {i + 1:2d} {'loaded  ' if loaded else 'unloaded'} {wall:5.1f} s "
                  f"exit {code}: {cal['reason']}", flush=True)

    classes = ["BLOCKING", "BUSY-WAIT", "OK"]
    got_classes = classes + sorted({g for _, g in confusion} - set(classes))
    print("\nconfusion matrix (rows: expected, columns: got), all runs:")
    print(f"  {'':10}" + "".join(f"{g:>11}" for g in got_classes))
    for e in classes:
        print(f"  {e:10}" + "".join(f"{confusion[(e, g)]:>11}" for g in got_classes))
    print(f"misclassifications: {len(wrong)}; inconclusive (saturated) runs: {inconclusive}")
    for w in wrong:
        print(f"  run {w[0]} ({'loaded' if w[1] else 'unloaded'}): {w[2]} got {w[3]} "
              f"(wait× {w[4]}, hub lag {w[5]} ms, CPU {w[6]})")
    print("\nsmallest margin from the threshold (deciding figure / threshold; >1 is right):")
    for e in classes:
        for loaded in (False, True):
            values = margins.get((e, loaded))
            if values:
                print(f"  {e:10} {'loaded' if loaded else 'unloaded':9} min {min(values):.2f}×"
                      f"  median {statistics.median(values):.2f}×  ({len(values)} controls)")
    print("\nconnect phase, the connect-stall rule alone (BLOCKING: controls it fired for):")
    for (e, loaded), values in sorted(connect_margins.items()):
        print(f"  {e:10} {'loaded' if loaded else 'unloaded':9} min {min(values):.2f}×"
              f"  median {statistics.median(values):.2f}×  ({len(values)} controls)")
    print(f"\nidle window, the cpu-while-idle rule (fired for {idle_fired} controls; none spins):")
    for loaded in (False, True):
        values = idle_values[loaded]
        if values:
            print(f"  {'loaded' if loaded else 'unloaded':9} CPU-s/s max {max(values):.3f}  "
                  f"median {statistics.median(values):.3f}; margin min "
                  f"{min(idle_margins[loaded]):.2f}×  ({len(values)} controls)")
    for loaded in (False, True):
        w = walls[loaded]
        if w:
            load = other_load[loaded]
            busy = f"; other programs' CPU: median {statistics.median(load):.0%}" if load else ""
            print(f"calibrate run time, {'loaded' if loaded else 'unloaded':9}: min {min(w):.1f} s,"
                  f" median {statistics.median(w):.1f} s, max {max(w):.1f} s{busy}")


if __name__ == "__main__":
    main()
