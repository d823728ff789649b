"""How long a password typed in ``--dsn`` stays in ``ps`` after geventprobe starts.

Starts ``geventprobe run --dsn postgresql://u:SECRET@127.0.0.1:PORT/db`` against a loopback
port that accepts connections and never answers (nothing else is started), reads
``/proc/<pid>/cmdline`` every millisecond from the moment ``Popen`` returns, as any user
of the machine could, and prints how long the secret was visible: min / median / max over
R runs, for the console script (``.venv/bin/geventprobe``) and for ``python -m geventprobe``.
Run it under the timing lock:

    flock /tmp/gp-timing.lock .venv/bin/python benchmarks/proctitle.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import time

SECRET = b"pw-bench-never-in-ps"


def visible_for(argv: list[str], limit_s: float = 3.0) -> float | None:
    """Seconds from the spawn to the last sample that still showed the secret (None: the
    process ended first, or the secret never left within ``limit_s``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "GEVENTPROBE"))}
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last_seen = 0.0
    gone_since = None
    try:
        while time.monotonic() - t0 < limit_s:
            try:
                with open(f"/proc/{proc.pid}/cmdline", "rb") as f:
                    line = f.read()
            except OSError:
                return None
            now = time.monotonic() - t0
            if SECRET in line:
                last_seen, gone_since = now, None
            elif gone_since is None:
                gone_since = now
            elif now - gone_since > 0.3:  # gone for good (it never comes back)
                return last_seen
            time.sleep(0.001)
        return None
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    dsn = f"postgresql://u:{SECRET.decode()}@127.0.0.1:{port}/db?connect_timeout=20"
    script = os.path.join(os.path.dirname(sys.executable), "geventprobe")
    commands = {
        "geventprobe (console script)": [script, "run", "--builds", "binary", "--dsn", dsn],
        "python -m geventprobe": [sys.executable, "-m", "geventprobe", "run", "--builds",
                                  "binary", "--dsn", dsn],
    }
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{args.runs} runs each: time the --dsn password stays in /proc/PID/cmdline")
    for name, argv in commands.items():
        times = [t for t in (visible_for(argv) for _ in range(args.runs)) if t is not None]
        if not times:
            print(f"  {name}: never measured (the process ended, or kept the secret)")
            continue
        ms = sorted(t * 1000 for t in times)
        print(f"  {name}: {ms[0]:.0f} / {statistics.median(ms):.0f} / {ms[-1]:.0f} ms "
              f"(min / median / max, {len(ms)} runs)")
    sock.close()


if __name__ == "__main__":
    main()
