"""Run ``geventprobe run`` and keep what the BUSY-WAIT cause reads: who ran on each hub.

Every gunicorn worker traces which greenlets ran during its idle window
(``ProbeResult.idle_running``), and a celery worker while each probe task waited on the
server (``TaskDone.running``, ``worker/running.py``); the run directory holding them is
removed at the end. This script runs geventprobe's CLI in-process with the judges wrapped
so that each worker's record (with its CPU figure over the same window) is written to
``--out`` first: the recorded inputs of the unit tests of ``causes.busy_greenlet``
(``tests/data/running/``, replayed by ``tests/test_busy_causes.py``).

    flock /tmp/gp-timing.lock .venv/bin/python benchmarks/capture_running.py \\
        --out tests/data/running/gunicorn-app-spin.json -- \\
        run --app app:application --chdir tests/apps/busy_app --profile quick
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from geventprobe import cli
from geventprobe.core import judge, metrics
from geventprobe.kinds.celery import task_rules


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("argv", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    kept: list[dict] = []

    def write() -> None:
        with open(args.out, "w") as f:
            json.dump(kept, f, indent=1)

    gunicorn_judge = judge.judge

    def keep_gunicorn(subject, run, workload, *a, **kw):
        for r in run.results:
            if r.idle_running is not None:
                cpu = metrics.worker_figures(r, run.cpu, rtt_ms=workload.rtt_ms).cpu_while_idle
                kept.append({"kind": "gunicorn idle window", "build": subject.build.name,
                             "pid": r.pid, "cpu": cpu,
                             "running": dataclasses.asdict(r.idle_running)})
        write()
        return gunicorn_judge(subject, run, workload, *a, **kw)

    celery_judge = task_rules.judge_all

    def keep_celery(run, *a, **kw):
        for b in run.batches:
            for t in b.tasks:
                if t.probe_running is not None:
                    kept.append({"kind": f"celery probe task {b.label}", "cpu":
                                 b.wait_cpu_per_s, "running":
                                 dataclasses.asdict(t.probe_running)})
        write()
        return celery_judge(run, *a, **kw)

    judge.judge = keep_gunicorn
    task_rules.judge_all = keep_celery
    sys.argv = ["geventprobe", *[a for a in args.argv if a != "--"]]
    cli.main()


if __name__ == "__main__":
    main()
