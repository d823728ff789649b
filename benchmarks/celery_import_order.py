"""Does geventprobe's boot dir change the import order of a celery worker? Measured.

For each example under examples/celery/, the worker is started twice the way its README
says, with ``PYTHONPROFILEIMPORTTIME=1`` (Python prints one line per import, in order):
once plain, once with geventprobe's boot dir on ``PYTHONPATH`` and the rest of the
environment ``run_celery`` gives it. Each run is stopped once the worker logs "ready.".
The two sequences of imported modules, up to "ready.", are compared: which modules the
boot adds (geventprobe's own and anything else), and whether every other module comes in
the same order — above all the driver, gevent and the app. docs/celery.md has the result.

    flock /tmp/gp-timing.lock .venv/bin/python benchmarks/celery_import_order.py
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time

from geventprobe.dsn import conninfo_to_uri
from geventprobe.kinds.celery.workers import make_boot_dir, worker_environ
from geventprobe.processes import children
from geventprobe.processes.broker import broker as run_broker
from geventprobe.processes.broker import queue_name
from geventprobe.processes.postgres import EmbeddedPostgres
from geventprobe.worker.celery_probe import DEFAULT_WORKLOAD

sys.path.insert(0, os.path.dirname(__file__))
from celery_examples import CASES, command_for

IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|( *)(\S+)\s*$")
KEY = ("psycopg", "psycopg2", "psycogreen", "gevent", "gevent.monkey", "celery", "tasks",
       "worker", "proj", "proj.celery", "django", "kombu")


def imports_until_ready(name: str, env: dict) -> tuple[list[str], float]:
    """The modules the worker imported, in order, until it logged "ready."."""
    command = command_for(name)
    run_dir = children.make_temp_dir("gp-import-order-")
    log = os.path.join(run_dir, "worker.log")
    try:
        env = dict(env, PYTHONPROFILEIMPORTTIME="1")
        t0 = time.monotonic()
        proc = children.spawn(command.argv, env=env, cwd=command.cwd, log_path=log)
        with children.running(proc, signal.SIGKILL, timeout=5):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with open(log, errors="replace") as f:
                    if " ready." in f.read():
                        break
                time.sleep(0.05)
            seconds = time.monotonic() - t0
        names = []
        with open(log, errors="replace") as f:
            for line in f:
                if " ready." in line:
                    break
                m = IMPORT_LINE.match(line.rstrip("\n"))
                if m:
                    names.append(m.group(2))
        return names, seconds
    finally:
        children.remove_temp_dir(run_dir)


def compare(plain: list[str], booted: list[str]) -> dict:
    added = [n for n in booted if n not in set(plain)]
    missing = [n for n in plain if n not in set(booted)]
    common = set(plain) & set(booted)
    a = [n for n in plain if n in common]
    b = [n for n in booted if n in common]
    first_diff = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    return {
        "modules": [len(plain), len(booted)],
        "added": added, "missing": missing,
        "same_order": a == b,
        "first_difference": None if first_diff is None else
        {"at": first_diff, "plain": a[first_diff:first_diff + 4],
         "booted": b[first_diff:first_diff + 4]},
        "added_at": {n: booted.index(n) for n in added},
        "key_positions_plain": {k: a.index(k) for k in KEY if k in a},
        "key_positions_booted": {k: b.index(k) for k in KEY if k in b},
    }


def main(names: list[str]) -> None:
    try:
        with EmbeddedPostgres(max_connections=60) as pg, run_broker() as broker:
            base = dict(os.environ, CELERY_BROKER_URL=broker.url,
                        DATABASE_URL=conninfo_to_uri(pg.dsn))
            for name in names:
                extra = CASES[name][3]
                plain, t_plain = imports_until_ready(name, dict(base, **extra))
                run_dir = children.make_temp_dir("gp-import-boot-")
                try:
                    env = worker_environ(dict(base, **extra), run_dir=run_dir,
                                         boot=make_boot_dir(run_dir), queue=queue_name(),
                                         broker_url=broker.url, dsn=pg.dsn,
                                         workload=DEFAULT_WORKLOAD)
                    booted, t_booted = imports_until_ready(name, env)
                finally:
                    children.remove_temp_dir(run_dir)
                print(json.dumps(dict(case=name, ready_s=[round(t_plain, 2), round(t_booted, 2)],
                                      **compare(plain, booted))), flush=True)
    finally:
        children.cleanup()


if __name__ == "__main__":
    chosen = [a for a in sys.argv[1:] if not a.startswith("-")]
    main(chosen or ["psycopg3_cli", "psycopg2_plain", "psycogreen_top", "worker_main",
                    "worker_main_patched", "shared_connection", "django_psycopg3"])
