"""The examples of docs/causes.md checked by hand, without geventprobe.

Plain ``gunicorn -k gevent -w 2 -c gunicorn.conf.py app:application`` in the example's
directory against a throwaway PostgreSQL, every worker warmed up, then one request alone
(3 times) and ``N`` concurrent requests (3 rounds, default 20) from threads. Prints the
wall time, p50, max and statuses of each round, and keeps gunicorn's whole log (the
tracebacks the FAILING examples write) at ``--log PATH`` when given: the unit tests of
``core/known_errors.py`` read those logs from ``tests/data/causes/``.

    flock /tmp/gp-timing.lock .venv/bin/python benchmarks/causes_by_hand.py \\
        pool_timeout GET /query --log tests/data/causes/pool_timeout.log
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from route_examples_by_hand import burst

from geventprobe.app.gunicorn_app import conninfo_to_uri
from geventprobe.processes import children
from geventprobe.processes.postgres import EmbeddedPostgres, free_port

EXAMPLES = Path(__file__).parent.parent / "examples"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("example")
    ap.add_argument("method")
    ap.add_argument("path")
    ap.add_argument("-n", type=int, default=20, help="concurrent requests per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--preload", action="store_true", help="gunicorn --preload")
    ap.add_argument("--log", help="keep gunicorn's log here")
    args = ap.parse_args()
    tmp = children.make_temp_dir("gp-causes-hand-")
    try:
        with EmbeddedPostgres(max_connections=100) as pg:
            port = free_port()
            env = dict(os.environ, DATABASE_URL=conninfo_to_uri(pg.dsn))
            log = os.path.join(tmp, "gunicorn.log")
            cmd = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "2", "-c",
                   "gunicorn.conf.py", "-b", f"127.0.0.1:{port}", "app:application"]
            if args.preload:
                cmd.insert(-1, "--preload")
            with open(log, "w") as f:
                proc = subprocess.Popen(cmd, cwd=EXAMPLES / args.example, env=env, stdout=f,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            try:
                time.sleep(3)
                for _ in range(2):  # warm every worker up
                    burst(port, args.method, args.path, 2)
                lone = [burst(port, args.method, args.path, 1) for _ in range(3)]
                print(args.example, "lone", [f"{s:.3f}" for s, _ in lone], lone[-1][1][0][0])
                for r in range(args.rounds):
                    time.sleep(0.5)
                    wall, out = burst(port, args.method, args.path, args.n)
                    statuses: dict[str, int] = {}
                    for code, _ in out:
                        statuses[code] = statuses.get(code, 0) + 1
                    lat = sorted(s for _, s in out)
                    print(args.example, f"round {r}: {args.n} concurrent wall {wall:.3f} s p50 "
                          f"{lat[len(lat) // 2]:.3f} max {lat[-1]:.3f} statuses {statuses}")
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(15)
            if args.log:
                shutil.copy(log, args.log)
            with open(log, errors="replace") as f:
                errors = [ln.rstrip() for ln in f if "Error" in ln or "Timeout" in ln]
            print(args.example, "log error lines:", len(errors), errors[:3])
    finally:
        children.remove_temp_dir(tmp)


if __name__ == "__main__":
    main()
