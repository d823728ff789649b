"""The example apps checked by hand, without geventprobe: plain gunicorn, 20 requests at once.

Starts a throwaway PostgreSQL, runs ``gunicorn -k gevent -w 2 -c gunicorn.conf.py
app:application`` in the example's directory, warms every worker up, then sends one
request alone (3 times) and 20 concurrent requests (3 rounds) from threads, and prints
the wall time, p50, max and the statuses, then the first error lines of gunicorn's log.
The "by hand" table of docs/routes.md comes from this.

    flock /tmp/gp-timing.lock .venv/bin/python benchmarks/route_examples_by_hand.py \\
        shared_connection GET /query
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from geventprobe.app.gunicorn_app import conninfo_to_uri
from geventprobe.processes import children
from geventprobe.processes.postgres import EmbeddedPostgres, free_port

EXAMPLES = Path(__file__).parent.parent / "examples"


def request(port: int, method: str, path: str, out: list, i: int) -> None:
    t0 = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                      "Connection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        out[i] = (data.split(b" ")[1].decode() if data else "empty", time.monotonic() - t0)
    except OSError as exc:
        out[i] = (type(exc).__name__, time.monotonic() - t0)


def burst(port: int, method: str, path: str, n: int) -> tuple[float, list]:
    out: list = [None] * n
    threads = [threading.Thread(target=request, args=(port, method, path, out, i))
               for i in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - t0, out


def main(example: str, method: str, path: str) -> None:
    tmp = children.make_temp_dir("gp-bench-hand-")
    try:
        with EmbeddedPostgres(max_connections=100) as pg:
            port = free_port()
            env = dict(os.environ, DATABASE_URL=conninfo_to_uri(pg.dsn))
            log = os.path.join(tmp, "gunicorn.log")
            with open(log, "w") as f:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "2", "-c",
                     "gunicorn.conf.py", "-b", f"127.0.0.1:{port}", "app:application"],
                    cwd=EXAMPLES / example, env=env, stdout=f, stderr=subprocess.STDOUT,
                    start_new_session=True)
            try:
                time.sleep(3)
                for _ in range(2):  # warm every worker up
                    burst(port, method, path, 4)
                lone = [burst(port, method, path, 1) for _ in range(3)]
                print(example, "lone", [f"{s:.3f}" for s, _ in lone], lone[-1][1][0][0])
                for r in range(3):
                    wall, out = burst(port, method, path, 20)
                    statuses: dict[str, int] = {}
                    for code, _ in out:
                        statuses[code] = statuses.get(code, 0) + 1
                    lat = sorted(s for _, s in out)
                    print(example, f"round {r}: 20 concurrent wall {wall:.3f} s p50 "
                          f"{lat[10]:.3f} max {lat[-1]:.3f} statuses {statuses}")
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(15)
            with open(log, errors="replace") as f:
                errors = [ln.strip() for ln in f if "Error" in ln]
            print(example, "log error lines:", errors[:2])
    finally:
        children.remove_temp_dir(tmp)


if __name__ == "__main__":
    main(*sys.argv[1:4])
