"""Recorded route phases (``benchmarks/capture_route_records.py``) back into what
``app/route_rules.judge_all`` received: the parent's ``RouteRun`` of each route, every
worker's ``RoutePhase`` and the ``Deployment``. JSON keeps no tuple and no integer key:
they are restored here."""

from __future__ import annotations

import json
from pathlib import Path

from geventprobe.app import gunicorn_app
from geventprobe.app.routes import RouteRun, RoutesRun, WarmUp, parse_route
from geventprobe.core.known_errors import Deployment
from geventprobe.worker import record
from geventprobe.worker.record import RoutePhase


def _clocks(d: dict | None) -> dict | None:
    return None if d is None else {int(k): tuple(v) for k, v in d.items()}


def load(path: Path) -> tuple[RoutesRun, Deployment]:
    """The route phase recorded in ``path`` and the deployment it was judged in."""
    data = json.loads(path.read_text())
    routes = []
    for r in data["routes"]:
        warm = r.get("warm_up")
        routes.append(RouteRun(
            route=parse_route(r["route"]), concurrency=r["concurrency"],
            lone_status=r["lone_status"], lone_s=r["lone_s"],
            burst=[tuple(b) for b in r["burst"]], t0=r["t0"], t1=r["t1"],
            connections={int(k): v for k, v in r["connections"].items()},
            log_lines=r["log_lines"], error=r["error"],
            clocks_due=_clocks(r.get("clocks_due")) or {},
            clocks=[_clocks(c) for c in r.get("clocks", [])],
            lone_cpu_s=r.get("lone_cpu_s"),
            warm_up=WarmUp(**warm) if warm else None))
    workers = {int(pid): record.load(RoutePhase, dict(w, version=record.RECORD_VERSION),
                                     path.name)
               for pid, w in data["workers"].items()}
    d = dict(data["deployment"])
    # Recorded when the deployment named its kind; every recording is of gunicorn.
    assert d.pop("kind", "gunicorn") == "gunicorn"
    deployment = Deployment(**dict(d, **gunicorn_app.DEPLOYMENT_WORDS,
                                   driver_blocking=tuple(d["driver_blocking"])
                                   if d["driver_blocking"] else None))
    return RoutesRun(routes=routes, workers=workers), deployment
