"""The celery examples checked by hand, without geventprobe's probe: plain celery -P gevent.

Starts a throwaway PostgreSQL and a throwaway redis-server (unix socket only, no
persistence), starts the example's worker the way its README says (``celery -A ...
worker -P gevent -c 16 -E``, or ``python worker.py``) with the broker and the database
in its environment, then, from celery's own task events (``-E``), times one task alone
and then 16 sent at once, each opening a connection and running ``pg_sleep(0.2)``:

- wall: from the first send to the last ``task-succeeded`` event;
- queue: ``task-started`` minus the send time, per task (received: ``task-received``);
- run: celery's own ``runtime`` of ``task-succeeded`` (what Flower shows);
- hub: gevent's monitor thread (``GEVENT_MONITOR_THREAD_ENABLE``) prints a report each
  0.1 s the hub did not switch: their count × 0.1 s is how long the hub was held;
- cpu: the worker's CPU-seconds per wall-second over the batch (psutil), the BUSY-WAIT
  figure (``--seconds 1`` makes each task wait 1 s on the server, so the time every task
  only waits dominates the batch; ``--seconds 0`` makes a quick task of it). ``--warm``
  sends two tasks first, so the lone one is not the worker's first.

A batch not done within 30 s is dumped with ``py-spy dump`` (if installed); then the
worker gets SIGTERM, and SIGKILL if it is still there after 10 s. The "Measured by hand"
section of docs/celery.md comes from this.

    flock /tmp/gp-timing.lock .venv/bin/python benchmarks/celery_by_hand.py psycopg3_cli
    flock /tmp/gp-timing.lock .venv/bin/python benchmarks/celery_by_hand.py all
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from geventprobe.app.gunicorn_app import conninfo_to_uri
from geventprobe.processes import children
from geventprobe.processes.postgres import EmbeddedPostgres

EXAMPLES = Path(__file__).parent.parent / "examples" / "celery"
CELERY = [sys.executable, "-m", "celery"]
WORKER = ["worker", "-P", "gevent", "-c", "16", "-l", "info", "-E"]

# name: (directory, argv, task name, extra environment)
CASES = {
    "psycopg3_cli": ("psycopg3_cli", [*CELERY, "-A", "tasks", *WORKER], "tasks.query", {}),
    "psycopg2_plain": ("psycopg2_plain", [*CELERY, "-A", "tasks", *WORKER], "tasks.query", {}),
    "psycogreen_process_init": ("psycogreen_process_init", [*CELERY, "-A", "tasks", *WORKER],
                                "tasks.query", {}),
    "psycogreen_worker_init": ("psycogreen_worker_init", [*CELERY, "-A", "tasks", *WORKER],
                               "tasks.query", {}),
    "psycogreen_top": ("psycogreen_top", [*CELERY, "-A", "tasks", *WORKER], "tasks.query", {}),
    "worker_main": ("worker_main", [sys.executable, "worker.py"], "tasks.query", {}),
    "worker_main_patched": ("worker_main_patched", [sys.executable, "worker.py"],
                            "tasks.query", {}),
    "shared_connection": ("shared_connection", [*CELERY, "-A", "tasks", *WORKER],
                          "tasks.query", {}),
    "django_psycopg3": ("django_orm", [*CELERY, "-A", "proj", *WORKER], "items.tasks.query",
                        {}),
    "django_psycopg2": ("django_orm", [*CELERY, "-A", "proj", *WORKER], "items.tasks.query",
                        {"DJANGO_DB_DRIVER": "psycopg2"}),
    "spinning_wait": ("spinning_wait", [*CELERY, "-A", "tasks", *WORKER], "tasks.query", {}),
    "pool_timeout": ("pool_timeout", [*CELERY, "-A", "tasks", *WORKER], "tasks.query", {}),
    "small_pool": ("small_pool", [*CELERY, "-A", "tasks", *WORKER], "tasks.query", {}),
}
SECONDS = float(sys.argv[sys.argv.index("--seconds") + 1]) if "--seconds" in sys.argv else 0.2


def start_redis(root: str):
    """redis-server on a unix socket in ``root``, no TCP port, no RDB, no AOF."""
    sock = os.path.join(root, "redis.sock")
    proc = children.spawn(
        ["redis-server", "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
         "--save", "", "--appendonly", "no", "--dir", root, "--daemonize", "no"],
        log_path=os.path.join(root, "redis.log"), cwd=root)
    deadline = time.monotonic() + 10
    while not os.path.exists(sock):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("redis-server did not start")
        time.sleep(0.02)
    return proc, f"redis+socket://{sock}"


class Events:
    """celery's task events, by task id, from a receiver in a thread."""

    def __init__(self, app):
        self.app = app
        self.tasks: dict[str, dict] = {}
        self.online = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _on(self, event):
        kind = event.get("type", "")
        if kind == "worker-online":
            self.online.set()
        if kind.startswith("task-"):
            self.tasks.setdefault(event["uuid"], {})[kind[5:]] = event

    def _run(self):
        with self.app.connection() as conn:
            recv = self.app.events.Receiver(conn, handlers={"*": self._on})
            while not self._stop:
                with contextlib.suppress(TimeoutError, OSError):
                    for _ in recv.itercapture(limit=None, timeout=0.2, wakeup=False):
                        if self._stop:
                            break

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop = True
        self._thread.join(2)

    def done(self, ids) -> int:
        return sum(1 for i in ids if "succeeded" in self.tasks.get(i, {})
                   or "failed" in self.tasks.get(i, {}))


def batch(app, events: Events, task: str, n: int, timeout: float, pid: int) -> dict:
    """Send ``n`` tasks at once; wait for them; the figures from celery's events."""
    import psutil

    sent: dict[str, float] = {}
    worker = psutil.Process(pid)
    cpu0, t0 = sum(worker.cpu_times()[:2]), time.monotonic()
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            t = time.time()
            result = app.send_task(task, kwargs={"seconds": SECONDS}, producer=producer)
            sent[result.id] = t
    deadline = time.monotonic() + timeout
    while events.done(sent) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    cpu = (sum(worker.cpu_times()[:2]) - cpu0) / (time.monotonic() - t0)
    first = min(sent.values())
    rows = []
    for tid, t_sent in sent.items():
        ev = events.tasks.get(tid, {})
        rows.append({
            "received": ev["received"]["timestamp"] - t_sent if "received" in ev else None,
            "queue": ev["started"]["timestamp"] - t_sent if "started" in ev else None,
            "runtime": ev["succeeded"]["runtime"] if "succeeded" in ev else None,
            "end": ev["succeeded"]["timestamp"] if "succeeded" in ev else None,
            "failed": ev["failed"].get("exception") if "failed" in ev else None,
        })
    ends = [r["end"] for r in rows if r["end"] is not None]
    return {
        "n": n, "done": len(ends),
        "counts": {k: sum(1 for i in sent if k in events.tasks.get(i, {}))
                   for k in ("received", "started", "succeeded")},
        "wall": round(max(ends) - first, 3) if len(ends) == n else None,
        "received": _span([r["received"] for r in rows]),
        "queue": _span([r["queue"] for r in rows]),
        "runtime": _span([r["runtime"] for r in rows]),
        "failed": sorted({r["failed"] for r in rows if r["failed"]}),
        "failed_n": sum(1 for r in rows if r["failed"]),
        "cpu_per_s": round(cpu, 3),
    }


def _span(values):
    values = [v for v in values if v is not None]
    return [round(min(values), 3), round(max(values), 3)] if values else None


def py_spy(pid: int) -> str:
    tool = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(tool):
        return "(py-spy not installed)"
    out = subprocess.run([tool, "dump", "--pid", str(pid)], capture_output=True, text=True,
                         timeout=30)
    return out.stdout + out.stderr


def hub_reports(log: str) -> int:
    with open(log, errors="replace") as f:
        return f.read().count("appears to be blocked")


def run_case(name: str, pg_dsn: str, broker: str, tmp: str) -> dict:
    from celery import Celery

    folder, argv, task, extra = CASES[name]
    folder = os.environ.get("BY_HAND_DIR", EXAMPLES / folder)  # a variant elsewhere
    env = dict(os.environ, DATABASE_URL=conninfo_to_uri(pg_dsn), CELERY_BROKER_URL=broker,
               PYTHONUNBUFFERED="1", **extra)
    if "--monitor" in sys.argv:  # gevent prints its reports: see docs/celery.md, it hangs celery
        env.update(GEVENT_MONITOR_THREAD_ENABLE="1", GEVENT_MAX_BLOCKING_TIME="0.1")
    log = os.path.join(tmp, f"{name}.log")
    app = Celery("by-hand", broker=broker)
    events = Events(app)
    events.start()
    t0 = time.monotonic()
    proc = children.spawn(argv, env=env, log_path=log, cwd=str(folder))
    out: dict = {"case": name}
    try:
        out["online"] = events.online.wait(30)
        out["boot_s"] = round(time.monotonic() - t0, 2)
        time.sleep(0.5)  # let the worker settle after worker-online
        if "--warm" in sys.argv:  # a task first: the worker's first-task costs are not alone's
            out["warm"] = batch(app, events, task, 2, 15, proc.pid)
        before = hub_reports(log)
        out["alone"] = batch(app, events, task, 1, 15, proc.pid)
        out["at_once"] = batch(app, events, task, 16, 30, proc.pid)
        out["hub_reports"] = hub_reports(log) - before
        if out["at_once"]["done"] < 16:
            out["stacks"] = py_spy(proc.pid)
    finally:
        t_stop = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
            out["stop"] = f"exited on SIGTERM in {time.monotonic() - t_stop:.1f} s"
        except subprocess.TimeoutExpired:
            out["stacks_at_stop"] = py_spy(proc.pid)
            out["stop"] = "ignored SIGTERM for 10 s: SIGKILL"
        children.stop(proc, signal.SIGKILL, timeout=5)
        events.stop()
        with open(log, errors="replace") as f:
            out["log_tail"] = [ln.rstrip() for ln in f.readlines()
                               if "appears to be blocked" not in ln][-12:]
    return out


def main(names: list[str]) -> None:
    tmp = children.make_temp_dir("gp-celery-hand-")
    try:
        redis, broker = start_redis(tmp)
        with children.running(redis), EmbeddedPostgres(max_connections=100) as pg:
            for name in names:
                result = run_case(name, pg.dsn, broker, tmp)
                stacks = result.pop("stacks", None), result.pop("stacks_at_stop", None)
                tail = result.pop("log_tail")
                print(json.dumps(result))
                for s in stacks:
                    if s:
                        print(s)
                if result["at_once"]["done"] < 16 or "--log" in sys.argv:
                    print("\n".join(tail))
    finally:
        children.cleanup()


if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--seconds" in argv:  # its value is not a case
        del argv[argv.index("--seconds"):argv.index("--seconds") + 2]
    chosen = [a for a in argv if not a.startswith("--")]
    main(list(CASES) if chosen == ["all"] else chosen)
