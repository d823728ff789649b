"""Quick routes sharing a gevent worker's CPU, measured by hand: plain gunicorn, no geventprobe.

Issue 24: a gevent worker runs one request's Python at a time, so 8 requests that each need
a few ms of CPU take ~8× as long together whether or not they share anything. This script
measures, per route, what the SERIALIZED rule must tell apart: the lone request, 16 at once
(2 workers), and what the CPU did meanwhile:

- each worker's main thread: CPU time and time runnable but waiting for a core
  (``/proc/<pid>/schedstat``, ns), summed as **busy**, over the burst's wall time;
- the CPU per request (both workers' CPU over the 16);
- PostgreSQL's CPU (the postmaster, its live backends and the ones it reaped) and the whole
  machine's busy share.

It starts a throwaway PostgreSQL, then for each example ``gunicorn -k gevent -w 2 -c
gunicorn.conf.py APP`` in its directory, warms every worker up (bursts of 4), sends each
route alone 3 times (the median is "lone"), then 16 at once, ``--rounds`` times (the
requests all due at one instant, timed to their last byte: geventprobe's own client,
``app/routes.send``). ``--hogs N`` runs N busy-looping processes meanwhile. Each example
runs under the machine's timing lock (``--lock``), hogs included.

    .venv/bin/python benchmarks/cpu_sharing_by_hand.py [--hogs 2] [--rounds 3] [CASE ...]

CASE: ``costs``, ``django_default``, ``flask_sqlalchemy``, ``shared_connection``,
``small_pool``, ``sqlalchemy_small_pool``, ``app_lock``, ``catalogue`` (default: all but
``catalogue``, which shows the first request of a cold worker instead: no warm-up).
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

import psutil
import timing_lock

from geventprobe.app import route_cpu
from geventprobe.app.gunicorn_app import conninfo_to_uri
from geventprobe.app.routes import parse_route, send
from geventprobe.core.stats import summarize
from geventprobe.processes import children, cpu
from geventprobe.processes.postgres import EmbeddedPostgres, free_port
from geventprobe.settings import Thresholds

ROOT = Path(__file__).parent.parent
EXAMPLES = ROOT / "examples"
COSTS = [f"/{kind}/{ms}" for kind in ("cpu", "wait", "pool") for ms in (1, 5, 20, 50, 200)]
CASES = {
    "costs": (Path(__file__).parent / "apps" / "route_costs", "app:application",
              [*COSTS, "/conn", "/cpuconn/5"]),
    "django_default": (EXAMPLES / "django_default", "mysite.wsgi:application", ["/health/"]),
    "flask_sqlalchemy": (EXAMPLES / "flask_sqlalchemy", "app:app", ["/health"]),
    "shared_connection": (EXAMPLES / "shared_connection", "app:application", ["/query"]),
    "small_pool": (EXAMPLES / "small_pool", "app:application", ["/query"]),
    "sqlalchemy_small_pool": (EXAMPLES / "sqlalchemy_small_pool", "app:application",
                              ["/query"]),
    "app_lock": (EXAMPLES / "app_lock", "app:application", ["/upstream"]),
    "catalogue": (EXAMPLES / "django_catalogue", "shop.wsgi:application", ["/health/"]),
}
HOG = "while True: pass"
N = 16
LIMIT = Thresholds().route_serialized_factor
FLOOR_MS = Thresholds().route_serialized_min_ms


def schedstat(pid: int) -> tuple[float, float]:
    """Seconds the main thread of ``pid`` ran, and waited runnable for a core."""
    with open(f"/proc/{pid}/schedstat") as f:
        ran, waited = f.read().split()[:2]
    return int(ran) / 1e9, int(waited) / 1e9


def tree_cpu(proc: psutil.Process) -> float:
    """CPU seconds of ``proc``, its live children and the children it reaped."""
    t = proc.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in proc.children():
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.Error:
            continue
    return total


def machine() -> float:
    t = psutil.cpu_times()
    return t.user + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)


def wait_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"gunicorn did not listen on {port}")


def measure_burst(port: int, route, pids: list[int], pg: psutil.Process) -> dict:
    before = {p: schedstat(p) for p in pids}
    pg0, m0 = tree_cpu(pg), machine()
    due, end, answers, at_due = send(port, route, N, 30.0, clock=lambda: cpu.clocks(pids))
    after = {p: schedstat(p) for p in pids}
    pg1, m1 = tree_cpu(pg), machine()
    wall = end - due
    lat = summarize([s * 1e6 for status, s, *_ in answers if status == "200"])
    ran = {p: after[p][0] - before[p][0] for p in pids}
    runq = {p: after[p][1] - before[p][1] for p in pids}
    busy = {p: (ran[p] + runq[p]) / wall for p in pids}
    # What the SERIALIZED rule reads (app/route_cpu.py): the busiest worker, running or
    # waiting for a core, from the due time to the p90 answer.
    share = route_cpu.share([(s, c) for status, s, _, _, c in answers if status == "200"],
                            at_due, {0: N})
    return {"wall": wall, "p50": (lat.p50_us or 0) / 1e6, "p90": (lat.p90_us or 0) / 1e6,
            "ok": lat.count, "cpu_per_req": sum(ran.values()) / N,
            "busy_max": max(busy.values()), "runq_max": max(runq.values()) / wall,
            "cpu_max": max(ran.values()), "pg_cpu": pg1 - pg0,
            "machine": (m1 - m0) / (wall * psutil.cpu_count()),
            "busy_p90": share.busy_ms / 1e3, "left": share.unexplained_ms / 1e3}


def lone(port: int, route) -> tuple[float, str]:
    _, _, answers, _ = send(port, route, 1, 30.0)
    status, s, _, _, _ = answers[0]
    return s, status


def run_case(name: str, pg: EmbeddedPostgres, rounds: int, hogs: int, warm: bool) -> None:
    directory, app, paths = CASES[name]
    tmp = children.make_temp_dir("gp-cpu-hand-")
    hog_procs = []
    try:
        port = free_port()
        env = dict(os.environ, DATABASE_URL=conninfo_to_uri(pg.dsn))
        env.pop("GUNICORN_CMD_ARGS", None)
        proc = children.spawn(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
             "-b", f"127.0.0.1:{port}", app],
            env=env, cwd=str(directory), log_path=os.path.join(tmp, "gunicorn.log"))
        try:
            wait_port(port, time.monotonic() + 30)
            master = psutil.Process(proc.pid)
            deadline = time.monotonic() + 30
            while len(master.children()) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            pids = sorted(c.pid for c in master.children())
            time.sleep(1.0)
            hog_procs = [children.spawn([sys.executable, "-c", HOG]) for _ in range(hogs)]
            if hogs:
                time.sleep(0.5)
            postmaster = psutil.Process(pg.proc.pid)
            for path in paths:
                route = parse_route(path)
                if warm:
                    for _ in range(3):  # every worker has served the route
                        send(port, route, 4, 30.0)
                else:
                    first = measure_burst(port, route, pids, postmaster)
                    print(f"{name:22} {path:12} cold 16 at once: wall {first['wall']*1e3:7.1f} "
                          f"ms p90 {first['p90']*1e3:7.1f} ms (the workers' first requests)",
                          flush=True)
                alone = [lone(port, route) for _ in range(3)]
                lone_s = statistics.median(s for s, _ in alone)
                got = []
                for _ in range(rounds):
                    time.sleep(0.3)
                    got.append(measure_burst(port, route, pids, postmaster))

                def rng(key, scale=1e3, fmt="{:.1f}", got=got):
                    vals = [g[key] * scale for g in got]
                    lo, hi = min(vals), max(vals)
                    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else \
                        f"{fmt.format(lo)}–{fmt.format(hi)}"

                factor = [g["p90"] / lone_s for g in got]
                extra = [(g["p90"] - lone_s) * 1e3 for g in got]
                # The rule's figure: what the CPU does not explain, against the lone request.
                rule = [g["left"] / lone_s for g in got]
                fired = sum(r >= LIMIT and (g["left"] - lone_s) * 1e3 >= FLOOR_MS
                            for r, g in zip(rule, got))
                before = sum(f >= LIMIT and e >= FLOOR_MS for f, e in zip(factor, extra))
                print(f"{name:22} {path:12} lone {lone_s*1e3:6.1f} ms | 16: wall {rng('wall')} "
                      f"p90 {rng('p90')} ms (x{min(factor):.2f}–{max(factor):.2f}, "
                      f"+{min(extra):.0f}–{max(extra):.0f} ms) | CPU/req {rng('cpu_per_req')} "
                      f"ms, worker busy {rng('busy_max', 100, '{:.0f}')}% (runq "
                      f"{rng('runq_max', 100, '{:.0f}')}%), PG CPU {rng('pg_cpu')} ms, "
                      f"machine {rng('machine', 100, '{:.0f}')}% | ok "
                      f"{min(g['ok'] for g in got)}/{N} | busy to p90 {rng('busy_p90')} ms, "
                      f"not CPU {rng('left')} ms = x{min(rule):.2f}–{max(rule):.2f} | "
                      f"SERIALIZED before {before}/{len(got)}, now {fired}/{len(got)}",
                      flush=True)
        finally:
            for hog in hog_procs:
                children.stop(hog)
            children.stop(proc)
    finally:
        children.remove_temp_dir(tmp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", default=[c for c in CASES if c != "catalogue"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hogs", type=int, default=0)
    parser.add_argument("--lock", default=timing_lock.DEFAULT,
                        help="the timing lock taken for each example ('' for none)")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {psutil.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.platform()}, "
          f"Python {platform.python_version()}; {args.hogs} CPU hogs", flush=True)
    with EmbeddedPostgres(max_connections=200) as pg:
        for name in args.cases:
            with timing_lock.held(args.lock):
                run_case(name, pg, args.rounds, args.hogs, warm=name != "catalogue")


if __name__ == "__main__":
    main()
