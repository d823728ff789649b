"""How much the HTTP load disturbs the in-worker evidence, and what users would feel.

Runs the real CLI for the given builds with the HTTP load off (``http_rate = 0``)
and at each given rate, R times each, interleaved so that drift in the machine's
load hits every setting alike, and prints per build and setting the in-worker
figures the verdict reads (wait factor, hub lag, CPU during waits: medians and
maxima over the runs) next to the request latency (p50 / p99 / max, errors).

    .venv/bin/python benchmarks/http_disturbance.py [--runs 3] [--rates 0,50,200]
        [--builds binary,psycopg2-green,psycopg2] [-- extra run args]
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

import psutil


def run_once(rate: float, builds: str, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        profile = os.path.join(tmp, "p.toml")
        with open(profile, "w") as f:
            f.write(f"[workload]\nhttp_rate = {rate}\n")
        out = os.path.join(tmp, "r.json")
        cmd = [sys.executable, "-m", "geventprobe", "run", "--builds", builds, "--config", profile,
               "--json", out, *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if not os.path.exists(out):
            raise SystemExit(f"run failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
        with open(out) as f:
            return json.load(f)


def fmt(values: list[float], spec: str = "{:.3f}") -> str:
    if not values:
        return "–"
    return f"{spec.format(statistics.median(values))} (max {spec.format(max(values))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rates", default="0,50,200")
    parser.add_argument("--builds", default="binary,psycopg2-green,psycopg2")
    parser.add_argument("extra", nargs="*", help="more arguments for geventprobe run")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    print(f"machine: {platform.machine()}, {psutil.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.platform()}, "
          f"Python {platform.python_version()}")
    print(f"builds {args.builds}; {args.runs} runs per rate, interleaved; extra args: "
          f"{' '.join(args.extra) or '(defaults)'}\n")
    rows: dict[tuple[str, float], dict[str, list]] = {}
    for _ in range(args.runs):
        for rate in rates:
            result = run_once(rate, args.builds, args.extra)
            for b in result["builds"]:
                m = b.get("metrics")
                if not m:
                    continue
                row = rows.setdefault((b["build"], rate), {k: [] for k in (
                    "verdict", "wait", "lag", "cpu", "p50", "p99", "max", "errors", "sent")})
                row["verdict"].append(b["verdict"])
                row["wait"].append(m["wait_factor"])
                row["lag"].append(m["max_hub_lag_ms"])
                if m.get("cpu_during_waits") is not None:
                    row["cpu"].append(m["cpu_during_waits"])
                req = m.get("requests")
                if req and req["latency"]["count"]:
                    row["p50"].append(req["latency"]["p50_us"] / 1000)
                    row["p99"].append(req["latency"]["p99_us"] / 1000)
                    row["max"].append(req["latency"]["max_us"] / 1000)
                if req:
                    row["errors"].append(req["errors"])
                    row["sent"].append(req["sent"])
    print(f"{'build':16} {'req/s':>5}  {'verdicts':18} {'wait×':18} {'hub lag ms':20} "
          f"{'CPU/s waits':20} {'req p50 ms':18} {'req p99 ms':20} {'errors/sent'}")
    for (build, rate), row in rows.items():
        verdicts = ",".join(sorted(set(row["verdict"])))
        err = f"{sum(row['errors'])}/{sum(row['sent'])}" if row["sent"] else "–"
        print(f"{build:16} {rate:5.0f}  {verdicts:18} {fmt(row['wait'], '{:.2f}'):18} "
              f"{fmt(row['lag'], '{:.1f}'):20} {fmt(row['cpu']):20} "
              f"{fmt(row['p50'], '{:.1f}'):18} {fmt(row['p99'], '{:.1f}'):20} {err}")


if __name__ == "__main__":
    main()
