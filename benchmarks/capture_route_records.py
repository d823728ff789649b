"""Run ``geventprobe run --app … --route …`` and keep what the route verdict reads.

The parent judges each route from its own figures (``app.routes.RouteRun``: the burst's
times, statuses, server connections and the workers' log lines) and each worker's
``routes-<pid>.json``; the run directory holding them is removed at the end. This script
runs geventprobe's CLI in-process with ``route_rules.judge_all`` wrapped so that both are
written to ``--out`` first, with the ``Deployment`` the route rules got (preload, the
app's directory, the driver's own cause): the recorded inputs of the unit tests of the
route causes (``tests/data/causes/records/``, replayed by ``tests/test_route_causes.py``).

    flock /tmp/gp-timing.lock .venv/bin/python benchmarks/capture_route_records.py \\
        --out tests/data/causes/records/small_pool.json -- \\
        run --app app:application --chdir examples/small_pool --route /query --profile quick

``--hogs N`` runs N busy-looping processes during the run (a loaded machine), stopped after
it. The records of ``tests/data/cpu/`` (``tests/test_route_cpu.py``) also hold the workers'
CPU clocks around the lone request and at each answer of the burst, and the warm-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys

from geventprobe import cli
from geventprobe.app import route_rules


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--hogs", type=int, default=0)
    ap.add_argument("argv", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    judge_all = route_rules.judge_all

    def keep(phase, t, deployment=None):
        if phase is not None:
            routes = []
            for r in phase.routes:
                d = dataclasses.asdict(r)
                d["route"] = str(r.route)
                routes.append(d)
            with open(args.out, "w") as f:
                json.dump({"routes": routes,
                           "workers": {str(k): dataclasses.asdict(v)
                                       for k, v in phase.workers.items()},
                           "error": phase.error,
                           "deployment": (dataclasses.asdict(deployment)
                                          if deployment is not None else None)},
                          f, separators=(",", ":"))
        return judge_all(phase, t, deployment)

    route_rules.judge_all = keep
    sys.argv = ["geventprobe", *[a for a in args.argv if a != "--"]]
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.hogs)]
    try:
        cli.main()
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


if __name__ == "__main__":
    main()
