"""What sharing the CPU explains of a route's burst: the part SERIALIZED must not read as
waiting (issue 24).

A gevent worker runs one request's Python at a time. C requests that each need a few ms of
CPU (a framework's request cycle, a new connection, the answer) take about C times as long
together, whether or not they share anything; on a loaded machine the worker also waits for
a core. Neither is requests waiting on each other for something shared. So the parent reads
each worker's main-thread clocks (``/proc/<pid>/schedstat``: the CPU it ran, the time it
waited runnable for a core; ``processes/cpu.clocks``) when the burst is due and as each
answer ends (``app/routes.send``), and this module says, for the burst's p90 answer, how
long the busiest worker was running or waiting to run meanwhile: that much of the p90 is the
CPU's. The rest is what SERIALIZED judges (``route_rules``).

Pure functions of recorded figures (tests: ``tests/test_route_cpu.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from geventprobe.app.routes import Clocks
from geventprobe.record import RouteCpu


def _spent(due: Clocks, at: Clocks) -> dict[int, tuple[float, float]]:
    """pid → (ran s, waited s) between two readings, for the workers in both."""
    return {p: (max(0.0, at[p][0] - due[p][0]), max(0.0, at[p][1] - due[p][1]))
            for p in due if p in at}


def share(answered: Sequence[tuple[float, Clocks | None]], due: Clocks,
          served: dict[int, int], lone_cpu_s: float | None = None) -> RouteCpu | None:
    """The CPU's part of the burst's p90 latency.

    ``answered``: each answered request's latency (s, from the burst's due time) and the
    workers' clocks as it ended; ``due``: the clocks when the burst was due; ``served``:
    worker pid → requests of the burst it served (the busiest of those that served any is
    read). None when the clocks were not read.
    """
    timed = sorted(((s, at) for s, at in answered if at), key=lambda x: x[0])
    if not due or not timed or len(timed) < len(answered):
        return None
    # The p90 answer by nearest rank, as core/stats.percentile ranks the burst's latencies.
    p90_s, at_p90 = timed[max(1, math.ceil(0.9 * len(timed))) - 1]
    spent = _spent(due, at_p90)
    # The workers that served the burst: a worker's CPU explains only its own requests' wait.
    serving = {p: rw for p, rw in spent.items() if served.get(p)} or spent
    if not serving:
        return None
    ran, waited = max(serving.values(), key=lambda rw: (rw[0] + rw[1], rw[0]))
    busy = min(ran + waited, p90_s)  # readings a few µs apart: never more than the wall
    whole = _spent(due, timed[-1][1])
    requests = sum(served.values())
    per_request = (sum(r for r, _ in whole.values()) / requests * 1000) if requests else None
    return RouteCpu(
        busy_ms=round(busy * 1000, 3), ran_ms=round(ran * 1000, 3),
        waited_ms=round(waited * 1000, 3), unexplained_ms=round((p90_s - busy) * 1000, 3),
        cpu_per_request_ms=round(per_request, 3) if per_request is not None else None,
        lone_cpu_ms=round(lone_cpu_s * 1000, 3) if lone_cpu_s is not None else None)


def note(cpu: RouteCpu, n: int, p90_ms: float, lone_ms: float) -> str:
    """A route whose burst the CPU explains, in words: ``16 at once took 68 ms (p90, …) with
    4.1 ms of CPU per request in the worker …``."""
    per = (f" with {cpu.cpu_per_request_ms:.1f} ms of CPU per request in the worker"
           + (f" ({cpu.lone_cpu_ms:.1f} ms alone)" if cpu.lone_cpu_ms is not None else "")
           if cpu.cpu_per_request_ms is not None else "")
    core = (f" ({cpu.waited_ms:.0f} of them waiting: other processes had the CPUs)"
            if cpu.waited_ms >= 0.5 * cpu.busy_ms else "")
    rate = (f". At this cost a worker serves ~{1000 / cpu.cpu_per_request_ms:,.0f} requests a "
            "second at most: more worker processes raise that, a bigger pool does not"
            if cpu.cpu_per_request_ms else "")
    return (f"{n} at once took {p90_ms:.0f} ms (p90, {p90_ms / lone_ms:.1f}× the lone "
            f"request){per}: a gevent worker runs one request's Python at a time, and the "
            f"busiest one was running or waiting for a core {cpu.busy_ms:.0f} of those "
            f"{p90_ms:.0f} ms{core}. The requests took turns on the CPU; none waited on "
            f"another{rate}")
