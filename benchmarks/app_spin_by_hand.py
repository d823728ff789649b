"""An app's own greenlet that loops on ``gevent.sleep(0)``, measured by hand (issue 25 row 12).

Plain ``gunicorn -k gevent -w 2`` on ``tests/apps/busy_app`` (no geventprobe)
against a throwaway PostgreSQL, with the app's loop on and off (``SPIN``): every worker's
CPU over ``--seconds`` of no traffic (psutil, CPU-s per wall-s), then 16 concurrent
``/query`` (``pg_sleep(0.2)`` each) and their wall time and statuses, ``--rounds`` times.

    flock /tmp/gp-timing.lock .venv/bin/python benchmarks/app_spin_by_hand.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from route_examples_by_hand import burst

from geventprobe.app.gunicorn_app import conninfo_to_uri
from geventprobe.processes.postgres import EmbeddedPostgres, free_port

APP = Path(__file__).parent.parent / "tests" / "apps" / "busy_app"


def workers_cpu(master: int, seconds: float) -> list[float]:
    procs = psutil.Process(master).children()
    before = [sum(p.cpu_times()[:2]) for p in procs]
    time.sleep(seconds)
    return [round((sum(p.cpu_times()[:2]) - b) / seconds, 3) for p, b in zip(procs, before)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    with EmbeddedPostgres(max_connections=100) as pg:
        for spin in ("1", "0"):
            port = free_port()
            env = dict(os.environ, DATABASE_URL=conninfo_to_uri(pg.dsn), SPIN=spin)
            proc = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-b",
                 f"127.0.0.1:{port}", "app:application"], cwd=APP, env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                time.sleep(3)
                burst(port, "GET", "/query", 4)  # warm every worker up
                for r in range(args.rounds):
                    idle = workers_cpu(proc.pid, args.seconds)
                    wall, out = burst(port, "GET", "/query", 16)
                    statuses: dict[str, int] = {}
                    for code, _ in out:
                        statuses[code] = statuses.get(code, 0) + 1
                    print(f"SPIN={spin} round {r}: workers' CPU-s/s with no traffic {idle}; "
                          f"16 x /query wall {wall:.3f} s statuses {statuses}", flush=True)
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(15)


if __name__ == "__main__":
    main()
