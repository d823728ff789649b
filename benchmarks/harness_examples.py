"""Every example through the harness (harness/harness.py: plain servers, no geventprobe).

For each case of each ``examples/**/example.json``, runs the harness ``--rounds`` times (a
fresh server, and a throwaway PostgreSQL and redis-server, each time) and prints one
Markdown row per case: the lone time, the N at once (p90), the slowest ping while they
ran, the busiest process's CPU over the lone one, the classes it showed and the one the
manifest expects. The table of examples/README.md comes from this. Each run takes the
machine's timing lock for itself (``--lock``, empty: none).

    .venv/bin/python benchmarks/harness_examples.py [--rounds 3] [NAME ...]

NAME is an example's directory under examples/ (``preload``, ``celery/psycopg2_plain``);
none: every example.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from timing_lock import DEFAULT, held

ROOT = Path(__file__).parent.parent
HARNESS = ROOT / "harness" / "harness.py"


def cases(names: list[str]) -> list[tuple[str, dict]]:
    found = []
    for manifest in sorted((ROOT / "examples").glob("**/example.json")):
        name = str(manifest.parent.relative_to(ROOT / "examples"))
        if not names or name in names:
            found += [(name, case) for case in json.loads(manifest.read_text())["cases"]]
    return found


def once(name: str, case: dict, lock: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "figures.json")
        argv = [sys.executable, str(HARNESS), str(ROOT / "examples" / name), "--json", out]
        if case.get("name"):
            argv += ["--case", case["name"]]
        with held(lock):
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        if not os.path.exists(out):
            return {"shows": f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}"}
        return json.loads(Path(out).read_text())


def span(values: list[float], unit: str = " s", digits: int = 2) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.{digits}f}{unit}" if f"{lo:.{digits}f}" == f"{hi:.{digits}f}" else \
        f"{lo:.{digits}f}–{hi:.{digits}f}{unit}"


def row(name: str, case: dict, runs: list[dict]) -> str:
    label = f"`{name}/`" + (f" ({case['name']})" if case.get("name") else "")
    what = case.get("request") or case.get("task")
    shows = sorted({r["shows"] for r in runs})
    if any("lone_s" not in r for r in runs):
        return f"| {label} | {what} | {'; '.join(shows)} |"
    measured = [r for r in runs if r["p90_s"]]
    at_once = span([r["p90_s"] for r in measured]) if measured else "never started"
    pings = span([r["ping_max_s"] for r in measured], digits=3) if measured else "no answer"
    failed = sum(r["failed"] for r in runs)
    failing = f", {failed} of {sum(r['n'] for r in runs)} failed" if failed else ""
    # CPU over a lone request shorter than 0.1 s is a tick or two: the harness does not judge it
    cpu = span([r["lone_cpu"] for r in runs], "") if min(r["lone_s"] for r in runs) >= 0.1 \
        else "–"
    return (f"| {label} | `{what}` | {span([r['lone_s'] for r in runs])} | {at_once}{failing} "
            f"| {pings} | {cpu} | {', '.join(shows)} | {case['expect']} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--lock", default=DEFAULT)
    args = ap.parse_args()
    print("| example | request or task | alone | 16 at once, p90 | slowest ping | CPU-s/s alone "
          "| harness | expected |")
    print("|---|---|---|---|---|---|---|---|")
    for name, case in cases(args.names):
        runs = [once(name, case, args.lock) for _ in range(args.rounds)]
        print(row(name, case, runs), flush=True)
        print(json.dumps({"example": name, "case": case.get("name"), "runs": runs}),
              file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
