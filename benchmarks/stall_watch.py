"""Who blocked under a held GIL, and what watching costs (worker/stall_watch.py).

Two measurements, each through the real ``geventprobe run`` (quick profile):

- ``detect``: ``examples/regex_route`` (a backtracking regular expression that holds the
  GIL ~0.2 s a call) ``--runs`` times; counts the runs whose route verdict is BLOCKING
  with a "who blocked" naming ``app.py`` in ``validate``.
- ``overhead``: a healthy build (``--builds binary``) ``--runs`` times with the stall
  watch on in every phase and off, in turn (``GEVENTPROBE_STALL_WATCH=all`` / ``0``; by
  default it runs in the route phase only); prints the workers' CPU during the wait
  windows (CPU-s per wall-s, the figure BUSY-WAIT is judged on), where gevent's monitor
  thread runs.

    .venv/bin/python benchmarks/stall_watch.py detect --runs 10
    .venv/bin/python benchmarks/stall_watch.py overhead --runs 5

Each run takes the machine's timing lock (``--lock``, default ``/tmp/gp-timing.lock``)
for itself only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import timing_lock

ROOT = Path(__file__).parent.parent
LOCK = timing_lock.DEFAULT


def _run(args: list[str], env: dict | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="gp-bench-sw-") as tmp, timing_lock.held(LOCK):
        out = os.path.join(tmp, "r.json")
        subprocess.run([sys.executable, "-m", "geventprobe", "run", "--profile", "quick",
                        "--json", out, *args], cwd=ROOT, env=env or dict(os.environ),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
        with open(out) as f:
            return json.load(f)


def detect(runs: int) -> None:
    named = held = fits = 0
    for i in range(runs):
        result = _run(["--app", "app:application", "--chdir", "examples/regex_route",
                       "--route", "/validate"])
        route = result["builds"][0]["routes"][0]
        who = (route.get("blocked_by") or [{}])[0]
        ok = route["verdict"] == "BLOCKING" and "in validate" in (who.get("user_frame") or "")
        named += ok
        held += bool(ok and who.get("gil_held"))
        fits += bool(ok and route.get("cause_kind") == "gil-held"
                     and "app.py:24 in validate" in (route.get("cause") or ""))
        print(json.dumps({"run": i, "verdict": route["verdict"],
                          "lag_ms": route["max_hub_lag_ms"], "count": who.get("count"),
                          "who": who.get("user_frame"), "named": ok,
                          "gil_held": who.get("gil_held"),
                          "cause_kind": route.get("cause_kind")}), flush=True)
    print(f"who blocked named app.py in validate in {named}/{runs} runs; the GIL held in "
          f"{held}/{runs}; cause and fix of a GIL-holding call at app.py:24 in {fits}/{runs}")


def overhead(runs: int) -> None:
    figures: dict[str, list[float]] = {"on": [], "off": []}
    for i in range(runs):
        for state in ("off", "on"):
            env = dict(os.environ, GEVENTPROBE_STALL_WATCH="all" if state == "on" else "0")
            build = _run(["--builds", "binary"], env)["builds"][0]
            m = build["metrics"]
            figures[state].append(m["cpu_during_waits"])
            print(json.dumps({"run": i, "watch": state, "verdict": build["verdict"],
                              "cpu_during_waits": round(m["cpu_during_waits"], 4),
                              "cpu_median": round(m["cpu_during_waits_median"], 4),
                              "wait_factor": round(m["wait_factor"], 3),
                              "max_hub_lag_ms": round(m["max_hub_lag_ms"], 2)}), flush=True)
    for state, values in figures.items():
        print(f"watch {state}: CPU-s/s during the wait windows median "
              f"{statistics.median(values):.4f}, {min(values):.4f}…{max(values):.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("detect", "overhead"))
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--lock", default=timing_lock.DEFAULT,
                    help="the timing lock taken for each run ('' for none)")
    args = ap.parse_args()
    global LOCK
    LOCK = args.lock
    (detect if args.what == "detect" else overhead)(args.runs)


if __name__ == "__main__":
    main()
