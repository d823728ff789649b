"""Accuracy of the verdict rules: repeat `geventprobe calibrate`, half of the runs under load;
and the route rules on real apps (``--routes``).

Every run classifies the same controls (BLOCKING, BUSY-WAIT and OK setups with a
known class) inside real gunicorn gevent workers. Half of the runs start a CPU
hog first: one busy-looping process per core, at normal priority, stopped when
the run ends. Prints the confusion matrix (expected class → got), the smallest
margin of each class from its threshold, inconclusive (saturated) runs, and the
time per calibrate run. Target: zero misclassifications. Also the idle rule's margin
(``cpu-while-idle``: every control's CPU while its connections sat open and idle; no
control spins there, so it must never fire).

    .venv/bin/python benchmarks/accuracy.py [--runs 20] [--workers 4] [--greenlets 16]

``--routes N`` runs each route of ``ROUTES`` N times instead (``geventprobe run --app …
--route … --profile quick``, every other run with ``--hogs`` busy loops): the quick routes
of healthy apps at their defaults (issue 24: OK, exit 0) and the routes whose requests wait
on each other (SERIALIZED, with their cause), and prints per route the verdicts and exit
codes, and the margin of the SERIALIZED rule: the figure it judges (burst p90 less what
sharing the CPU explains, over the lone request) and the ms over the lone request, each
against its limit (1.8×, 50 ms), on the side the route must be (> 1 is right); and how often
the rule before issue 24 (no CPU taken off) would have fired.

Each run takes the machine's timing lock (``--lock``, default ``/tmp/gp-timing.lock``) for
itself only, hogs included.
"""

from __future__ import annotations

import argparse
import json
import math
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
EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")
ROUTES = [  # (example, app, route, the class it must get)
    ("django_default", "mysite.wsgi:application", "/health/", "OK"),
    ("flask_sqlalchemy", "app:app", "/health", "OK"),
    ("shared_connection", "app:application", "/query", "SERIALIZED"),
    ("small_pool", "app:application", "/query", "SERIALIZED"),
    ("sqlalchemy_small_pool", "app:application", "/query", "SERIALIZED"),
    ("app_lock", "app:application", "/upstream", "SERIALIZED"),
]


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


def route_run(dsn: str, example: str, app: str, route: str, hogs: int) -> tuple[dict, int]:
    """One `geventprobe run --app … --route …` (quick profile) with ``hogs`` busy loops
    beside it; returns its route's JSON and the exit code."""
    started = [children.spawn([sys.executable, "-c", HOG]) for _ in range(hogs)]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "run.json")
            proc = subprocess.run(
                [sys.executable, "-m", "geventprobe", "run", "--profile", "quick", "--app", app,
                 "--chdir", os.path.join(EXAMPLES, example), "--route", route, "--json", out],
                env=dict(os.environ, GEVENTPROBE_DSN=dsn), capture_output=True, text=True,
                check=False)
            if not os.path.exists(out):
                raise SystemExit(f"{example} failed (exit {proc.returncode}): {proc.stderr}")
            with open(out) as f:
                (r,) = json.load(f)["builds"][0]["routes"]
            return r, proc.returncode
    finally:
        for hog in started:
            children.stop(hog)


def serialized_margin(r: dict, t_factor: float, t_ms: float, expected: str
                      ) -> tuple[float, float, float, bool]:
    """(the rule's figure, its ms over the lone request, the margin on the expected side,
    whether the rule before issue 24 would have fired)."""
    rule = next(e for e in r["evidence"] if e["rule"] == "route-serialized")
    lone, p90 = r["lone_ms"], r["burst"]["p90_us"] / 1000
    left = r["cpu"]["unexplained_ms"] if r["cpu"] else p90
    value, over = rule["value"], left - lone
    if expected == "OK":  # it must miss either limit: how far it misses the farther one
        margin = max(t_factor / max(value, 1e-9), t_ms / over if over > 0 else math.inf)
    else:  # it must pass both: how far above the nearer one
        margin = min(value / t_factor, over / t_ms)
    before = p90 >= t_factor * lone and p90 - lone >= t_ms
    return value, over, margin, before


def routes(args) -> None:
    """The route rules on real apps, ``args.routes`` runs each, every other one loaded."""
    from geventprobe.settings import Thresholds

    t = Thresholds()
    print(f"{args.routes} runs of each route (geventprobe run --app … --route … --profile "
          f"quick); every other run with {args.hogs} CPU hogs")
    rows: dict[tuple[str, bool], list] = {}
    with EmbeddedPostgres(max_connections=120) as pg:
        for i in range(args.routes):
            loaded = i % 2 == 1
            for example, app, route, expected in ROUTES:
                if args.only and example not in args.only:
                    continue
                with timing_lock.held(args.lock):
                    r, code = route_run(pg.dsn, example, app, route, args.hogs if loaded else 0)
                if r["verdict"] != expected and args.keep:  # its whole record, to look at
                    os.makedirs(args.keep, exist_ok=True)
                    with open(os.path.join(args.keep, f"{example}-{i + 1}.json"), "w") as f:
                        json.dump(r, f, indent=1)
                value, over, margin, before = serialized_margin(
                    r, t.route_serialized_factor, t.route_serialized_min_ms, expected)
                rows.setdefault((example, loaded), []).append(
                    (r["verdict"], code, value, over, margin, before, r["cause_kind"]))
                print(f"run {i + 1:2d} {'loaded  ' if loaded else 'unloaded'} {example:22} "
                      f"{r['verdict']:10} exit {code} rule {value:6.2f}× {over:+8.1f} ms "
                      f"margin {margin:6.2f}× before: {'fired' if before else 'quiet'} "
                      f"{r['cause_kind'] or ''}", flush=True)
    print(f"\nroutes (limits {t.route_serialized_factor:g}× and {t.route_serialized_min_ms:g} "
          "ms; margin > 1 is right):")
    for example, _, route, expected in ROUTES:
        for loaded in (False, True):
            got = rows.get((example, loaded), [])
            if not got:
                continue
            verdicts = Counter(v for v, *_ in got)
            codes = Counter(c for _, c, *_ in got)
            right = verdicts[expected]
            print(f"  {example:22} {route:10} {'loaded' if loaded else 'unloaded':9} "
                  f"{expected:10} {right}/{len(got)} right ("
                  + ", ".join(f"{v} {n}" for v, n in sorted(verdicts.items()))
                  + "; exit " + ", ".join(f"{c}×{n}" for c, n in sorted(codes.items()))
                  + f"); rule {min(g[2] for g in got):.2f}–{max(g[2] for g in got):.2f}×, "
                  f"{min(g[3] for g in got):+.0f}–{max(g[3] for g in got):+.0f} ms; margin "
                  f"min {min(g[4] for g in got):.2f}×; the rule before issue 24 fired in "
                  f"{sum(g[5] for g in got)}/{len(got)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--greenlets", type=int, default=16)
    parser.add_argument("--routes", type=int, default=0,
                        help="run each route of ROUTES this many times instead")
    parser.add_argument("--hogs", type=int, default=2, help="busy loops of a loaded route run")
    parser.add_argument("--only", nargs="*", default=[], help="these examples of ROUTES only")
    parser.add_argument("--keep", default="",
                        help="a directory for the route record of each run that went wrong")
    parser.add_argument("--lock", default=timing_lock.DEFAULT,
                        help="the timing lock taken for each run ('' for none)")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {psutil.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.platform()}, "
          f"Python {platform.python_version()}")
    if args.routes:
        routes(args)
        return
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
