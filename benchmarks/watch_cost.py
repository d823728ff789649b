"""What watching a healthy worker costs: gevent's monitor thread, the stall watch, the sampler.

One process set up like a probed worker (``monkey.patch_all()`` first, psycopg binary,
a 2 ms heartbeat greenlet) runs G greenlets, each looping ``pg_sleep(w)`` on its own
connection (healthy: they overlap), and measures its own CPU (every thread's
``/proc/self/task/*/schedstat``, ns resolution) over ``--seconds`` windows, in turn:

- ``none``: nothing watches;
- ``monitor``: gevent's monitor thread as geventprobe runs it (``worker/monitor.py``),
  stall watch off: the figure before issue 20;
- ``monitor+watch``: the same with the stall watch's alarm re-armed every 20 ms
  (``worker/stall_watch.py``): the figure after;
- ``monitor+watch+parked``: and the parked-greenlet sampler (``worker/parked.py``)
  looking at the G greenlets every 20 ms, as in the route phase.

Prints CPU-s per wall-s of each state, ``--rounds`` times, and the sampler's own cost per
look.

    flock /tmp/gp-timing.lock .venv/bin/python benchmarks/watch_cost.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from geventprobe.processes.postgres import EmbeddedPostgres

CHILD = r"""
import json, os, sys, time
from gevent import monkey
monkey.patch_all()
import gevent, greenlet
os.environ["PSYCOPG_IMPL"] = "binary"
import psycopg
from geventprobe.worker import parked
from geventprobe.worker.monitor import Monitor

dsn, g, w, seconds, rounds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), \
    float(sys.argv[4]), int(sys.argv[5])

def cpu():
    total = 0
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/schedstat") as f:
            total += int(f.read().split()[0])
    return total / 1e9

def beat():
    while True:
        gevent.sleep(0.002)

def loop(conn):
    parked.track(greenlet.getcurrent())
    while True:
        conn.execute("SELECT pg_sleep(%s)", (w,))

conns = [psycopg.connect(dsn, autocommit=True) for _ in range(g)]
gevent.spawn(beat)
jobs = [gevent.spawn(loop, c) for c in conns]
gevent.sleep(0.5)
for r in range(rounds):
    for state in ("none", "monitor", "monitor+watch", "monitor+watch+parked"):
        m = None
        if "monitor" in state:
            m = Monitor(0.05)
            m.stall_watch = "watch" in state
            m.start()
        s = parked.Sampler().start() if "parked" in state else None
        gevent.sleep(0.1)
        c0, t0 = cpu(), time.monotonic()
        gevent.sleep(seconds)
        figure = (cpu() - c0) / (time.monotonic() - t0)
        rec = s.stop() if s else None
        events = m.stop() if m else []
        print(json.dumps({"round": r, "state": state, "cpu_s_per_s": round(figure, 5),
                          "monitor_events": len(events),
                          "sampler_us_per_look": round(rec["cost_s"] / rec["looks"] * 1e6, 1)
                          if rec and rec["looks"] else None}), flush=True)
gevent.killall(jobs)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--greenlets", type=int, default=16)
    ap.add_argument("--wait", type=float, default=0.05, help="w: each pg_sleep, seconds")
    ap.add_argument("--seconds", type=float, default=3.0, help="each measured window")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    figures: dict[str, list[float]] = {}
    with EmbeddedPostgres(max_connections=args.greenlets + 10) as pg:
        out = subprocess.run([sys.executable, "-c", CHILD, pg.dsn, str(args.greenlets),
                              str(args.wait), str(args.seconds), str(args.rounds)],
                             capture_output=True, text=True, timeout=600,
                             env=dict(os.environ))
    if out.returncode != 0:
        sys.exit(out.stderr)
    for line in out.stdout.splitlines():
        print(line)
        rec = json.loads(line)
        figures.setdefault(rec["state"], []).append(rec["cpu_s_per_s"])
    for state, values in figures.items():
        print(f"{state}: CPU-s/s median {statistics.median(values):.4f} "
              f"({min(values):.4f}…{max(values):.4f})")


if __name__ == "__main__":
    main()
