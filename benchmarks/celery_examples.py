"""Every celery example through the real CLI: the verdict geventprobe gives, the exit code,
and the time from start to verdict.

For each example under examples/celery/, ``geventprobe run --celery APP`` (or
``--celery-cmd "python worker.py"``) ``--chdir examples/celery/NAME --task ... --json``,
started as a user would (a fresh process, its own PostgreSQL and redis-server), timed
from the spawn to the exit. Prints one JSON line per run: the worker's verdict, each
task's, the exit code, the figures that separate the classes (queue and run time apart,
celery's runtime, hub lag, the connect phase's stall share, CPU while only waiting), the
record's timings, and the wall time. ``--repeat N`` runs each N times (medians for
docs/benchmarks.md). docs/celery.md has the table against the verdicts measured by hand
(plain celery: the harness, ``harness/harness.py``; examples/README.md).

    flock /tmp/gp-timing.lock .venv/bin/python benchmarks/celery_examples.py all
    flock /tmp/gp-timing.lock .venv/bin/python benchmarks/celery_examples.py --repeat 3 \\
        psycopg3_cli psycopg2_plain worker_main
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples" / "celery"
BIN = Path(sys.executable).parent

# name: (directory, ["--celery", APP] or ["--celery-cmd", COMMAND], task, extra env, by hand)
CASES = {
    "psycopg3_cli": ("psycopg3_cli", ["--celery", "tasks"], "tasks.query", {}, "OK"),
    "psycopg2_plain": ("psycopg2_plain", ["--celery", "tasks"], "tasks.query", {}, "BLOCKING"),
    "psycogreen_process_init": ("psycogreen_process_init", ["--celery", "tasks"],
                                "tasks.query", {}, "BLOCKING"),
    "psycogreen_worker_init": ("psycogreen_worker_init", ["--celery", "tasks"], "tasks.query",
                               {}, "OK"),
    "psycogreen_top": ("psycogreen_top", ["--celery", "tasks"], "tasks.query", {}, "OK"),
    "worker_main": ("worker_main", ["--celery-cmd", "python worker.py"], "tasks.query", {},
                    "never ran"),
    "worker_main_patched": ("worker_main_patched", ["--celery-cmd", "python worker.py"],
                            "tasks.query", {}, "OK"),
    "shared_connection": ("shared_connection", ["--celery", "tasks"], "tasks.query", {},
                          "SERIALIZED (the task)"),
    "django_psycopg3": ("django_orm", ["--celery", "proj"], "items.tasks.query", {}, "OK"),
    "django_psycopg2": ("django_orm", ["--celery", "proj"], "items.tasks.query",
                        {"DJANGO_DB_DRIVER": "psycopg2"}, "BLOCKING"),
    "spinning_wait": ("spinning_wait", ["--celery", "tasks"], "tasks.query", {}, "BUSY-WAIT"),
    "pool_timeout": ("pool_timeout", ["--celery", "tasks"], "tasks.query", {},
                     "FAILING (the task)"),
}


def run_case(name: str) -> dict:
    folder, how, task, extra, by_hand = CASES[name]
    out_dir = tempfile.mkdtemp(prefix="gp-bench-celery-")
    path = os.path.join(out_dir, "run.json")
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra)
    argv = [str(BIN / "geventprobe"), "run", *how, "--chdir", str(EXAMPLES / folder),
            "--task", task, "--json", path]
    t0 = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.monotonic() - t0
    out = {"case": name, "by_hand": by_hand, "exit": proc.returncode,
           "seconds": round(seconds, 2)}
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        out["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return out
    finally:
        if os.path.exists(path):
            os.remove(path)
        os.rmdir(out_dir)
    row = record["builds"][0]
    out["verdict"] = row["verdict"]
    out["timings"] = dict(record["timings"], **{f"worker {k}": v
                                                for k, v in row["timings"].items()})
    for t in row["tasks"]:
        key = "probe" if t["probe"] else t["task"]
        fig = {"verdict": t["verdict"]}
        for label in ("alone", "at_once"):
            b = t[label]
            if b is not None:
                fig[label] = {k: b[k] for k in ("wall_s", "queue_max_s", "run_p90_s",
                                                 "run_max_s", "celery_runtime_max_s",
                                                 "hub_lag_ms", "wait_cpu_per_s", "overlap",
                                                 "server_connections", "failed")}
        if t["stall"]:
            fig["stall"] = {k: t["stall"][k] for k in ("kind", "why", "waited_s",
                                                        "hub_silent_s", "user_frame",
                                                        "stopped")}
        out[key] = fig
    stall = next((e for e in row["evidence"] if e["rule"] == "connect-stall"), None)
    out["connect_stall"] = stall["value"] if stall else None
    out["cause"] = row["cause"]
    return out


def main(names: list[str], repeat: int) -> None:
    times: dict[str, list[float]] = {}
    for _ in range(repeat):
        for name in names:
            result = run_case(name)
            times.setdefault(name, []).append(result["seconds"])
            print(json.dumps(result), flush=True)
    if repeat > 1:
        for name, values in times.items():
            print(json.dumps({"case": name, "runs": values,
                              "median_s": round(statistics.median(values), 2),
                              "min_s": min(values), "max_s": max(values)}))


if __name__ == "__main__":
    args = sys.argv[1:]
    repeat = 1
    if "--repeat" in args:
        i = args.index("--repeat")
        repeat = int(args[i + 1])
        del args[i:i + 2]
    main(list(CASES) if args == ["all"] else args, repeat)
