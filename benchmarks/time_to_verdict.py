"""Time to verdict of the default run: `geventprobe run --workers 4`, server start included.

Runs the real CLI R times (default 3) and prints wall time per run and per build,
as min / median / max. The target: a median of 20 s or less on a 2-core machine.

    .venv/bin/python benchmarks/time_to_verdict.py [--runs 3] [-- extra run args]
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

import psutil


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("extra", nargs="*", help="more arguments for geventprobe run")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {psutil.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.platform()}")
    walls, per_build, exits = [], {}, []
    per_phase: dict[str, list[float]] = {}
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "r.json")
            cmd = [sys.executable, "-m", "geventprobe", "run", "--workers", "4", "--json", out,
                   *args.extra]
            t = time.monotonic()
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            wall = time.monotonic() - t
            walls.append(wall)
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
        print(f"run {i + 1}: {wall:.1f} s wall, exit {proc.returncode}: {verdicts}")
        for b in result["builds"]:
            # A verdict the build should not have: say which rule fired, with its numbers.
            if b["verdict"] != (b["expected"] or "OK"):
                for e in b["evidence"]:
                    if e["fired"]:
                        print(f"  {b['build']} {e.get('phase', '')}: {e['text']}")

    def fmt(values):
        return (f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f} s")

    print(f"\nwall (min / median / max over {args.runs}): {fmt(walls)}")
    for name, values in per_build.items():
        print(f"  {name:15} {fmt(values)}")
    print("where the time went (the run's steps, then each build's):")
    for name, values in per_phase.items():
        print(f"  {name:28} {fmt(values)}")
    print(f"exit codes: {exits}")


if __name__ == "__main__":
    main()
