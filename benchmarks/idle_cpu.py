"""Do idle connections spin? The CPU of a gevent worker while its G connections sit idle.

The claim to check ("CPU spikes on idle connections") had never been measured. For each
build (binary, c, python: psycopg 3 chosen by ``PSYCOPG_IMPL``; psycopg2-green: psycopg2
with psycogreen's wait callback; psycopg2: without), a child process does what a probed
gunicorn worker does (``monkey.patch_all()`` first, then the driver; a heartbeat greenlet
every 2 ms) and opens G connections, then sits through three idle states of ``--idle``
seconds each, while the parent reads the child's CPU time (psutil) around each one:

- ``open``: the connections are open and nothing uses them (what a worker between
  requests holds);
- ``listen``: one greenlet per connection waits for a notification
  (``LISTEN`` + psycopg 3's ``notifies()`` / psycopg2's ``poll()`` after a gevent
  ``wait_read``): a greenlet parked on an idle socket, the state a wait function is in;
- ``pool`` (psycopg 3 builds): a psycopg_pool pool of G idle connections, with its
  scheduler and worker greenlets;
- ``spin-control``: one greenlet per connection polling its idle socket with a zero
  timeout and ``gevent.sleep(0)`` (a synthetic busy-wait): what a spinning idle
  connection would look like, so the measurement is shown to see one;
- and ``none``: the same process with no connection at all (the floor).

Prints CPU-s per wall-s for each build and state, ``--rounds`` times.

    flock /tmp/gp-timing.lock .venv/bin/python benchmarks/idle_cpu.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import psutil

from geventprobe.processes.postgres import EmbeddedPostgres

BUILDS = ("binary", "c", "python", "psycopg2-green", "psycopg2")

CHILD = r"""
import json, os, sys, time
from gevent import monkey
monkey.patch_all()
import gevent
build, dsn, g = sys.argv[1], sys.argv[2], int(sys.argv[3])
psycopg2 = build.startswith("psycopg2")
if psycopg2:
    import psycopg2 as drv
    if build == "psycopg2-green":
        from psycogreen.gevent import patch_psycopg
        patch_psycopg()
else:
    import psycopg as drv

def beat():
    while True:
        gevent.sleep(0.002)

gevent.spawn(beat)

def say(word):
    from gevent.socket import wait_read
    print(word, flush=True)
    # The parent's go, after it read our CPU: waited for cooperatively, so the hub (and
    # whatever the idle state parks on it) runs meanwhile.
    wait_read(sys.stdin.fileno())
    if not os.read(sys.stdin.fileno(), 64):
        sys.exit(0)

say("none")
conns = [drv.connect(dsn) for _ in range(g)]
for c in conns:
    c.autocommit = True
say("open")

def listen(i, c):
    if psycopg2:
        from gevent.socket import wait_read
        cur = c.cursor()
        cur.execute(f"LISTEN ch{i}")
        while True:
            wait_read(c.fileno())
            c.poll()
    else:
        c.execute(f"LISTEN ch{i}")
        for _ in c.notifies():
            pass

jobs = [gevent.spawn(listen, i, c) for i, c in enumerate(conns)]
gevent.sleep(0.05)
say("listen")
gevent.killall(jobs, block=True)

def spin(c):
    # The control: a wait that polls the idle socket with a zero timeout and yields
    # without sleeping (what a busy-waiting driver does): the measurement must see it.
    import select
    while True:
        select.select([c.fileno()], [], [], 0)
        gevent.sleep(0)

jobs = [gevent.spawn(spin, c) for c in conns]
say("spin-control")
gevent.killall(jobs, block=True)
if not psycopg2:
    for c in conns:
        c.close()
    from psycopg_pool import ConnectionPool
    pool = ConnectionPool(dsn, min_size=g, max_size=g, open=True)
    pool.wait()
    say("pool")
    pool.close()
say("end")
"""


def _cpu(proc: psutil.Process) -> float:
    """CPU seconds of every thread of the process, in ns resolution from
    /proc/<pid>/task/*/schedstat (psutil's user+system count 10 ms ticks: at 0.3 s
    windows a tick is a third of the figure); psutil where schedstat is missing."""
    total, found = 0, False
    for task in os.listdir(f"/proc/{proc.pid}/task") if os.path.isdir("/proc") else []:
        try:
            with open(f"/proc/{proc.pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
                found = True
        except (OSError, ValueError, IndexError):
            pass
    if found:
        return total / 1e9
    t = proc.cpu_times()
    return t.user + t.system


def measure(build: str, dsn: str, g: int, idle: float) -> dict[str, float]:
    """CPU-s per wall-s of one child in each idle state."""
    env = dict(os.environ)
    if build in ("binary", "c", "python"):
        env["PSYCOPG_IMPL"] = build
    child = subprocess.Popen([sys.executable, "-c", CHILD, build, dsn, str(g)], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    out: dict[str, float] = {}
    try:
        proc = psutil.Process(child.pid)
        while True:
            state = child.stdout.readline().strip()
            if not state or state == "end":
                break
            time.sleep(0.05)  # let the state settle (connections just opened, greenlets parked)
            c0, t0 = _cpu(proc), time.monotonic()
            time.sleep(idle)
            out[state] = round((_cpu(proc) - c0) / (time.monotonic() - t0), 4)
            child.stdin.write("go\n")
            child.stdin.flush()
    finally:
        child.kill()
        child.wait(10)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--greenlets", type=int, default=16, help="G: connections per worker")
    ap.add_argument("--idle", type=float, default=0.3, help="seconds of each idle state")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--builds", default=",".join(BUILDS))
    args = ap.parse_args()
    with EmbeddedPostgres(max_connections=args.greenlets * 2 + 10) as pg:
        for r in range(args.rounds):
            for build in args.builds.split(","):
                print(json.dumps({"round": r, "build": build,
                                  **measure(build, pg.dsn, args.greenlets, args.idle)}),
                      flush=True)


if __name__ == "__main__":
    main()
