"""Known-bad setups the probe can be made to run, to show the detector sees them.

``GEVENTPROBE_CONTROL=busy-wait`` replaces psycopg's wait function, inside the
worker, with a cooperative wait that never sleeps: it polls the socket with a
zero timeout and calls ``gevent.sleep(0)`` between polls. Greenlets keep
running, but the worker burns a core while the server works (docs/field-facts.md).

``GEVENTPROBE_CONTROL=idle-spin`` leaves the waits alone and, during the idle window
only, runs one greenlet per open connection that polls its idle socket the same way (a
zero timeout, ``gevent.sleep(0)``): what a keep-alive or notification listener that never
sleeps would do, to show the idle window's rule sees it.
"""

from __future__ import annotations

import os
import sys


def _spinning_wait(gen, fileno, interval=None, timeout=None):
    """psycopg's wait protocol, implemented as a busy loop that yields but never sleeps."""
    import select

    import gevent
    from gevent import monkey
    from psycopg import waiting

    poll_cls = monkey.get_original("select", "poll")
    ready_r, ready_w = waiting.READY_R, waiting.READY_W
    ready_none = getattr(waiting, "READY_NONE", 0)
    evmasks = waiting._poll_evmasks
    try:
        state = next(gen)
        poll = poll_cls()
        poll.register(fileno, evmasks[state])
        while True:
            events = poll.poll(0)  # never blocks: the hub keeps running...
            if not events:
                gevent.sleep(0)  # ...and never sleeps: that is the bug
                if interval is not None:
                    # psycopg's generators want to hear about idle intervals too
                    gen.send(ready_none)
                continue
            ev = events[0][1]
            ready = (ready_r if ev & select.POLLIN else 0) | (ready_w if ev & select.POLLOUT else 0)
            state = gen.send(ready)
            poll.modify(fileno, evmasks[state])
    except StopIteration as stop:
        return stop.value


def apply(build: str) -> str | None:
    """Apply the control named by ``GEVENTPROBE_CONTROL`` to a psycopg 3 ``build``.

    psycopg2 builds are left alone: importing psycopg there would change what they report.
    """
    control = os.environ.get("GEVENTPROBE_CONTROL")
    if build.startswith("psycopg2"):
        return None
    if control == "idle-spin":
        return control  # nothing to replace: idle_spinners() runs in the idle window
    if control == "busy-wait":
        from psycopg import waiting

        _spinning_wait.__name__ = "busy_wait_control"
        waiting.wait = _spinning_wait
    elif control:
        raise ValueError(f"unknown GEVENTPROBE_CONTROL {control!r}")
    return control


def _spin_on(fileno: int) -> None:
    """Poll an idle socket forever with a zero timeout, yielding but never sleeping."""
    import select

    import gevent
    from gevent import monkey

    poll = monkey.get_original("select", "poll")()
    poll.register(fileno, select.POLLIN)
    while True:
        poll.poll(0)
        gevent.sleep(0)


def idle_spinners(conns: list) -> list:
    """Under ``GEVENTPROBE_CONTROL=idle-spin``, one spinning greenlet per connection, for the
    probe to kill when its idle window ends; otherwise none. psycopg2 builds are left
    alone, as by ``apply``: the baselines keep their known class."""
    if os.environ.get("GEVENTPROBE_CONTROL") != "idle-spin":
        return []
    harness = sys.modules.get("geventprobe.worker.harness_app")
    if str(getattr(harness, "BUILD", "") or "").startswith("psycopg2"):
        return []
    import gevent

    return [gevent.spawn(_spin_on, conn.fileno()) for conn in conns]
