"""The route phase on the example apps: each verdict and the figures it rests on, N rounds.

Runs ``geventprobe run --app app:application --route ...`` (quick profile: 2 workers,
8 concurrent requests per worker) on every example of ``examples/`` that has a
route, against one throwaway PostgreSQL, and prints per run: verdict, exit code, lone
latency, burst p50/p90, burst factor (p90 / lone), max hub lag during the burst, the
server connections and requests of the busiest worker, and the time of the whole run.
These are the figures ``docs/routes.md`` and the thresholds in ``configs/default.toml``
are derived from.

    flock /tmp/gp-timing.lock .venv/bin/python benchmarks/route_examples.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from geventprobe.processes import children
from geventprobe.processes.postgres import EmbeddedPostgres

EXAMPLES = Path(__file__).parent.parent / "examples"
ROUTES = {
    "clean": "/query",
    "shared_connection": "/query",
    "small_pool": "/query",
    "cpu_route": "POST /login",
    "django_preload": "/items",
}


def ms(us: float | None) -> str:
    return f"{us / 1000:7.1f}" if us is not None else "      –"


def one(example: str, route: str, dsn: str) -> str:
    out_dir = children.make_temp_dir("gp-bench-routes-")
    try:
        out = os.path.join(out_dir, "r.json")
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "geventprobe", "run", "--profile", "quick", "--json", out,
             "--app", "app:application", "--chdir", str(EXAMPLES / example), "--route", route],
            env={**os.environ, "GEVENTPROBE_DSN": dsn}, capture_output=True, text=True,
            check=False, timeout=300)
        took = time.monotonic() - started
        if not os.path.exists(out):
            return f"{example:18} exit {proc.returncode}: {proc.stderr.strip()[-200:]}"
        with open(out) as f:
            (r,) = json.load(f)["builds"][0]["routes"]
        return (f"{example:18} {r['verdict']:10} exit {proc.returncode}  lone "
                f"{r['lone_ms'] or 0:6.1f} ms  p50 {ms(r['burst']['p50_us'])}  p90 "
                f"{ms(r['burst']['p90_us'])} ms  factor {r['burst_factor'] or 0:5.2f}  hub lag "
                f"{r['max_hub_lag_ms']:7.1f} ms  conns {r['server_connections']}  "
                f"statuses {r['statuses']}  run {took:4.1f} s")
    finally:
        children.remove_temp_dir(out_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    os.environ.setdefault("TMPDIR", tempfile.gettempdir())
    with EmbeddedPostgres(max_connections=120) as pg:
        for i in range(args.rounds):
            print(f"## round {i + 1}")
            for example, route in ROUTES.items():
                print(one(example, route, pg.dsn), flush=True)


if __name__ == "__main__":
    main()
