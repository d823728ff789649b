"""How late the ``--rtt`` delay proxy delivers, beyond the delay asked for.

Starts the embedded PostgreSQL and, for each RTT, the real proxy process in front of
it; 16 client threads (psycopg) then do what a probe does: connect at once, run rounds
of 16 concurrent ``SELECT pg_sleep(0.05)``, then a closed ``SELECT 1`` loop. The proxy
measures every chunk's lateness itself (kernel receive time + RTT/2 -> time sent);
this prints its p50 / p99 / max in µs, with its CPU time, and the clients' own SELECT 1
round trip for comparison. Run it under the timing lock:

    flock /tmp/gp-timing.lock .venv/bin/python benchmarks/proxy_delay.py \\
        [--rtt 0.5,1,20] [--clients 16] [--seconds 2] [--compare-realtime]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import threading
import time

import psutil
import psycopg

from geventprobe.processes import children
from geventprobe.processes.delay_proxy import DelayProxy, Upstream, proxied_dsn
from geventprobe.processes.postgres import EmbeddedPostgres


def _client(dsn: str, start: threading.Barrier, rounds: int, seconds: float,
            select1_us: list[float]) -> None:
    start.wait()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for _ in range(rounds):
            start.wait()
            conn.execute("SELECT pg_sleep(0.05)")
        start.wait()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.perf_counter()
            conn.execute("SELECT 1")
            select1_us.append((time.perf_counter() - t) * 1e6)


def measure(pg: EmbeddedPostgres, rtt_ms: float, clients: int, seconds: float,
            realtime: bool) -> str:
    """One proxy at ``rtt_ms`` in front of ``pg``: its figures as a line."""
    upstream = Upstream("127.0.0.1", pg.port)
    with DelayProxy(upstream, rtt_ms, realtime=realtime) as proxy:
        dsn = proxied_dsn(pg.dsn, proxy.port)
        ps = psutil.Process(proxy.proc.pid)
        cpu0 = sum(ps.cpu_times()[:2])
        rounds = 5
        start = threading.Barrier(clients)
        select1: list[float] = []
        threads = [threading.Thread(target=_client,
                                    args=(dsn, start, rounds, seconds, select1))
                   for _ in range(clients)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - t0
        cpu = sum(ps.cpu_times()[:2]) - cpu0
    f = proxy.figures
    e = f.extra_delay_us
    rt = statistics.median(select1) / 1000 if select1 else float("nan")
    return (f"rtt {rtt_ms:5g} ms {'realtime' if realtime else 'normal  '}: "
            f"{f.chunks:6d} chunks, {f.connections} conns; extra delay p50 {e.p50_us:7.1f} µs, "
            f"p99 {e.p99_us:7.1f} µs, max {e.max_us:8.1f} µs; proxy CPU {cpu / wall:.2f} s/s; "
            f"client SELECT 1 median {rt:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt", default="0.5,1,20", help="comma-separated RTTs, ms")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--compare-realtime", action="store_true",
                        help="also run each RTT with the proxy at normal priority")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {psutil.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.platform()}, "
          f"Python {platform.python_version()}, psycopg {psycopg.__version__}; "
          f"load average {psutil.getloadavg()[0]:.2f}")
    modes = (True, False) if args.compare_realtime else (True,)
    try:
        with EmbeddedPostgres(max_connections=args.clients + 20) as pg:
            for rtt in (float(x) for x in args.rtt.split(",")):
                for realtime in modes:
                    print(measure(pg, rtt, args.clients, args.seconds, realtime),
                          flush=True)
    finally:
        children.cleanup()


if __name__ == "__main__":
    sys.exit(main())
