"""The celery examples through geventprobe's own parent side (``run_celery``), timed.

For each example under examples/celery/: a throwaway PostgreSQL and redis-server (one
each for the whole script), then ``run_celery`` on the example's worker, started as its
README says (``--celery APP`` or ``--celery-cmd "python worker.py"``), and the figures
it collects: the warm-up, one probe task alone and 16 at once (queue and run time apart,
hub lag, overlap, CPU), the example's own ``query`` task alone and 16 at once, the stall
if any, how the worker stopped. ``--time`` also measures a whole run of one APP and one
task from nothing (PostgreSQL, broker, worker, tasks, stop, cleanup): the issue's target
is 15 s on this machine. docs/celery.md has the figures.

    flock /tmp/gp-timing.lock .venv/bin/python benchmarks/celery_examples.py all
    flock /tmp/gp-timing.lock .venv/bin/python benchmarks/celery_examples.py --time
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from geventprobe.processes import children
from geventprobe.processes.broker import broker as run_broker
from geventprobe.processes.celery_workers import (
    CeleryRun,
    UserTask,
    app_command,
    run_celery,
    user_command,
)
from geventprobe.processes.postgres import EmbeddedPostgres

EXAMPLES = Path(__file__).parent.parent / "examples" / "celery"
C = 16

# name: (directory, "app" APP or "cmd" COMMAND, the example's task, extra environment)
CASES = {
    "psycopg3_cli": ("psycopg3_cli", ("app", "tasks"), "tasks.query", {}),
    "psycopg2_plain": ("psycopg2_plain", ("app", "tasks"), "tasks.query", {}),
    "psycogreen_process_init": ("psycogreen_process_init", ("app", "tasks"), "tasks.query", {}),
    "psycogreen_worker_init": ("psycogreen_worker_init", ("app", "tasks"), "tasks.query", {}),
    "psycogreen_top": ("psycogreen_top", ("app", "tasks"), "tasks.query", {}),
    "worker_main": ("worker_main", ("cmd", f"{sys.executable} worker.py"), "tasks.query", {}),
    "worker_main_patched": ("worker_main_patched", ("cmd", f"{sys.executable} worker.py"),
                            "tasks.query", {}),
    "shared_connection": ("shared_connection", ("app", "tasks"), "tasks.query", {}),
    "django_psycopg3": ("django_orm", ("app", "proj"), "items.tasks.query", {}),
    "django_psycopg2": ("django_orm", ("app", "proj"), "items.tasks.query",
                        {"DJANGO_DB_DRIVER": "psycopg2"}),
}


def command_for(name: str):
    folder, (how, what), _, _ = CASES[name]
    cwd = str(EXAMPLES / folder)
    return app_command(what, C, cwd) if how == "app" else user_command(what, cwd)


def summary(name: str, run: CeleryRun, seconds: float) -> dict:
    """The figures that separate the classes, rounded for a table."""
    def r(x, n=3):
        return None if x is None else round(x, n)

    out: dict = {"case": name, "seconds": round(seconds, 2), "timings": run.timings}
    if run.ready is not None:
        facts = run.ready.facts
        out["pool"] = run.ready.pool.rsplit(".", 2)[-2]
        out["concurrency"] = run.ready.concurrency
        out["select_patched"] = facts.get("select_patched")
        out["wait"] = (facts.get("psycopg") or {}).get("wait")
        out["psycopg2_cb"] = (facts.get("psycopg2") or {}).get("wait_callback")
        out["driver_import"] = (facts.get("driver_import") or {}).get("where")
        out["patches"] = [p.get("by") for p in facts.get("patches", [])]
        out["signals"] = [s for s, _ in run.ready.signals]
    if run.facts_after is not None:
        after = run.facts_after.facts
        out["after"] = {"driver": after.get("driver"),
                        "wait": (after.get("psycopg") or {}).get("wait"),
                        "psycopg2_cb": (after.get("psycopg2") or {}).get("wait_callback"),
                        "imported": (after.get("driver_import") or {}).get("where")}
    if run.hub is not None:
        out["blocked_stacks"] = sum(len(g["times"]) for g in run.hub.blocked)
        users = [e["frames"][e["user"]] for e in run.hub.blocked if e.get("user") is not None]
        out["blocked_by"] = sorted(set(users))[:3]
    if run.connected is not None and run.connected.windows and run.hub is not None:
        a, b = run.connected.windows[0]
        out["connect"] = {"ms": r((b - a) * 1000, 1),
                          "hub_lag_ms": r(run.hub.lag_in(a, b) * 1000, 1)}
    for b in run.batches:
        out[f"{b.label} {b.task}"] = {
            "done": f"{b.done}/{b.size}", "wall": r(b.wall_s), "queue_max": r(b.queue_max_s),
            "run_med": r(b.run_median_s), "run_max": r(b.run_max_s),
            "celery_rt_max": r(b.celery_runtime_max_s), "hub_lag": r(b.hub_lag_s),
            "overlap": r(b.overlap, 1), "peak": b.peak, "cpu_s": r(b.cpu_s, 2),
            "wait_cpu_s": r(b.wait_cpu_s, 3),
            "common_wait": r(b.common_wait[1] - b.common_wait[0]) if b.common_wait else None,
            # celery's own runtime against ours (prerun to postrun), the largest gap, ms
            "celery_vs_ours_ms": r(max((abs(t.celery_runtime - t.run_s) * 1000
                                        for t in b.tasks if t.celery_runtime is not None
                                        and t.run_s is not None), default=None) or None, 2)}
    if run.stall is not None:
        s = run.stall
        out["stall"] = {"kind": s.kind, "batch": s.batch, "received": s.received,
                        "started": s.started, "finished": s.finished, "sent": s.sent,
                        "hub_silent_s": s.hub_silent_s,
                        "stack": [ln.strip() for ln in s.stacks.splitlines()
                                  if "File" in ln][:8]}
    if run.stop is not None:
        out["stop"] = f"{run.stop.signal} {run.stop.seconds} s rc={run.stop.returncode}"
    out["queue_cleanup"] = run.queue_cleanup
    out["boot_errors"] = list(run.boot_errors)
    return out


def one(name: str, dsn: str, broker) -> CeleryRun:
    _, _, task, extra = CASES[name]
    import os

    env = dict(os.environ, **extra)
    return run_celery(command_for(name), dsn=dsn, broker=broker, wait_s=0.2,
                      tasks=[UserTask(task, kwargs={"seconds": 0.2})], env=env,
                      result_backend=broker.url if broker.embedded else None)


def main(names: list[str]) -> None:
    try:
        with EmbeddedPostgres(max_connections=200) as pg, run_broker() as broker:
            for name in names:
                t0 = time.monotonic()
                run = one(name, pg.dsn, broker)
                print(json.dumps(summary(name, run, time.monotonic() - t0)), flush=True)
                if "-v" in sys.argv and run.stall is not None:
                    print(run.stall.stacks)
                    print(run.stall.greenlets)
                    print("\n".join(run.log_tail))
    finally:
        children.cleanup()


def whole_run(name: str = "psycopg3_cli") -> None:
    """One APP and one task from nothing to figures, as `geventprobe run --celery` will."""
    t0 = time.monotonic()
    try:
        with EmbeddedPostgres(max_connections=2 * C + 20) as pg:
            t_pg = time.monotonic()
            with run_broker() as broker:
                t_broker = time.monotonic()
                run = one(name, pg.dsn, broker)
                t_run = time.monotonic()
        t_end = time.monotonic()
    finally:
        children.cleanup()
    print(json.dumps({"case": name, "total_s": round(t_end - t0, 2),
                      "postgres_s": round(t_pg - t0, 2), "redis_s": round(t_broker - t_pg, 2),
                      "celery_run_s": round(t_run - t_broker, 2),
                      "teardown_s": round(t_end - t_run, 2), "timings": run.timings,
                      "stall": run.stall.kind if run.stall else None}))


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    if "--time" in sys.argv:
        for case in args or ["psycopg3_cli"]:
            whole_run(case)
    else:
        main(list(CASES) if args == ["all"] else args)
