"""Time to verdict of the default run: `geventprobe run --workers 4`, server start included.

Runs the real CLI R times (default 3) and prints wall time and CPU (user + system of the
whole process tree, from its rusage) per run, and per build and per phase (the record's
``timings``) as min / median / max. Each run takes the machine's timing lock
(``--lock``, default ``/tmp/gp-timing.lock``; empty for none). The target: a median of
10 s or less on a 2-core machine.

``--cpu`` also samples the process tree every 50 ms (``tree_cpu.py``) and prints where the
CPU went, by kind of process and by phase (the start: CLI, import checks and server; each
build's boot, connect, idle, waits, SELECT 1, requests, and what lies between builds). The
sampling costs the machine some CPU itself: take the wall figures from runs without it.

    .venv/bin/python benchmarks/time_to_verdict.py [--runs 3] [--cpu] [-- extra run args]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import psutil
import timing_lock
import tree_cpu

from geventprobe.processes.children import temp_root


def _rusage_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def phase_spans(result: dict, sampler: tree_cpu.TreeSampler, start: float, end: float
                ) -> list[tuple[str, float, float]]:
    """(phase, from, to) of one run, from the run dirs' marks and each build's timings.

    The builds are taken in the order they were told go; what lies before the first go is
    the first boot (every build's, when they boot ahead), what lies between one build's
    request phase and the next one's go is the stop of the one and the boot (when it was
    not booted ahead) of the next.
    """
    dirs = sorted((d for d in sampler.dirs.values() if "go" in d.marks),
                  key=lambda d: d.marks["go"])
    rows = [b for b in result["builds"] if b.get("timings")]
    if not dirs or len(dirs) != len(rows):
        return [("whole run (run dirs not matched)", start, end)]
    first = min(d.seen for d in sampler.dirs.values())
    spans = [("start: CLI, import checks, server", start, first)]
    after = first
    for i, (d, b) in enumerate(zip(dirs, rows)):
        t = b["timings"]
        go, done = d.marks["go"], d.marks.get("result all")
        if done is None:
            continue
        spans.append(("first boot" if i == 0 else "between builds: stop, judge, boot",
                      after, go))
        s1 = done - t.get("select1", 0.0)
        waits = s1 - t.get("waits", 0.0)
        idle = waits - t.get("idle", 0.0)
        spans += [("connect (and first queries)", go, idle), ("idle", idle, waits),
                  ("waits", waits, s1), ("select1", s1, done)]
        after = done
        if "http-go" in d.marks:
            after = d.marks["http-go"] + t.get("requests", 0.0)
            spans.append(("requests", done, after))
    spans.append(("last stop, server stop, report", after, end))
    return spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cpu", action="store_true",
                        help="sample the process tree: CPU by kind of process and by phase")
    parser.add_argument("--lock", default=timing_lock.DEFAULT,
                        help="the timing lock taken for each run ('' for none)")
    parser.add_argument("extra", nargs="*", help="more arguments for geventprobe run")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {psutil.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.platform()}")
    walls, cpus, per_build, exits = [], [], {}, []
    per_phase: dict[str, list[float]] = {}
    by_kind: dict[str, list[float]] = {}
    by_phase: dict[str, dict[str, list[float]]] = {}
    for i in range(args.runs):
        # The run's own TMPDIR (its run dirs are what --cpu watches), where geventprobe puts
        # its temp dirs when none is named: in memory when it has room (children.temp_root).
        with tempfile.TemporaryDirectory(dir=temp_root()) as tmp, timing_lock.held(args.lock):
            out = os.path.join(tmp, "r.json")
            private = os.path.join(tmp, "tmp")
            os.mkdir(private)
            os.chmod(tmp, 0o755)
            os.chmod(private, 0o1777)  # as root the embedded server runs as another user
            cmd = [sys.executable, "-m", "geventprobe", "run", "--workers", "4", "--json", out,
                   *args.extra]
            cpu_before = _rusage_cpu()
            t = time.monotonic()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env=dict(os.environ, TMPDIR=private))
            sampler = tree_cpu.TreeSampler(proc.pid, private, workers=4)
            if args.cpu:
                with sampler:
                    proc.communicate()
            else:
                proc.communicate()
            end = time.monotonic()
            wall = end - t
            cpu = _rusage_cpu() - cpu_before
            walls.append(wall)
            cpus.append(cpu)
            exits.append(proc.returncode)
            with open(out) as f:
                result = json.load(f)
        for b in result["builds"]:
            per_build.setdefault(b["build"], []).append(b["duration_s"])
        for phase, seconds in (result.get("timings") or {}).items():
            if not phase.startswith("build "):
                per_phase.setdefault(phase, []).append(seconds)
        for b in result["builds"]:
            for phase, seconds in (b.get("timings") or {}).items():
                per_phase.setdefault(f"{b['build']}: {phase}", []).append(seconds)
        verdicts = ", ".join(f"{b['build']} {b['verdict']}" for b in result["builds"])
        print(f"run {i + 1}: {wall:.1f} s wall, {cpu:.1f} s CPU, exit {proc.returncode}: "
              f"{verdicts}", flush=True)
        for b in result["builds"]:
            # A verdict the build should not have: say which rule fired, with its numbers.
            if b["verdict"] != (b["expected"] or "OK"):
                for e in b["evidence"]:
                    if e["fired"]:
                        print(f"  {b['build']} {e.get('phase', '')}: {e['text']}")
        if args.cpu:
            sampled = 0.0
            for kind in tree_cpu.KINDS:
                used = sampler.cpu(kind)
                sampled += used
                by_kind.setdefault(kind, []).append(used)
            by_kind.setdefault("unattributed (rusage - sampled)", []).append(cpu - sampled)
            sums: dict[str, dict[str, float]] = {}
            for name, a, b in phase_spans(result, sampler, t, end):
                row = sums.setdefault(name, {"wall": 0.0})
                row["wall"] += b - a
                for kind in tree_cpu.KINDS:
                    row[kind] = row.get(kind, 0.0) + sampler.cpu(kind, (a, b))
            for name, row in sums.items():
                for key, value in row.items():
                    by_phase.setdefault(name, {}).setdefault(key, []).append(value)

    def fmt(values):
        return (f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f} s")

    print(f"\nwall (min / median / max over {args.runs}): {fmt(walls)}")
    print(f"CPU, user + system of every process (min / median / max): {fmt(cpus)}")
    for name, values in per_build.items():
        print(f"  {name:15} {fmt(values)}")
    print("where the time went (the run's steps, then each build's):")
    for name, values in per_phase.items():
        print(f"  {name:28} {fmt(values)}")
    if args.cpu:
        med = statistics.median
        print("\nCPU by kind of process (min / median / max):")
        for kind, values in by_kind.items():
            print(f"  {kind:38} {fmt(values)}")
        print("\nCPU by phase, every build summed (medians over the runs, s):")
        groups = {"parent": [tree_cpu.PARENT], "gunicorn": [tree_cpu.MASTER, tree_cpu.WORKERS],
                  "postgres": [tree_cpu.POSTGRES, tree_cpu.BACKENDS],
                  "other": [tree_cpu.WATCHDOG, tree_cpu.CHECKS, tree_cpu.INITDB,
                            tree_cpu.OTHER]}
        print(f"  {'phase':34} {'wall':>6} {'CPU':>6} " +
              " ".join(f"{g:>8}" for g in groups))
        for name, row in by_phase.items():
            total = med([sum(v[i] for k, v in row.items() if k != "wall")
                         for i in range(len(row["wall"]))])
            cells = " ".join(f"{med([sum(x) for x in zip(*(row.get(k, [0.0]) for k in ks))]):8.2f}"
                             for ks in groups.values())
            print(f"  {name:34} {med(row['wall']):6.2f} {total:6.2f} {cells}")
    print(f"exit codes: {exits}")


if __name__ == "__main__":
    main()
