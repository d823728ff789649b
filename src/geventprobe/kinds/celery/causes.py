"""Why a celery worker blocks, and the fix, in celery's words.

The driver's causes are the same as under gunicorn (``core/causes.py`` reads the same
facts: the wait function psycopg chose, psycopg2's wait callback, whether select was
patched when the driver was imported); their fixes are not. A gevent worker of celery
is one process started by a command, not a gunicorn master with hooks (measured,
docs/celery.md):

- only the ``celery`` program patches before it imports the app; ``app.worker_main()``
  (``python worker.py``) patches nothing at all, so the consumer waits for the broker in
  a real ``epoll`` and no task ever runs;
- ``worker_process_init`` is sent by the prefork and solo pools only, never under
  ``-P gevent``: psycogreen installed there never runs. ``worker_init``, or the top of
  the module celery imports, does.
"""

from __future__ import annotations

from collections.abc import Collection

from geventprobe.core import blocked, causes
from geventprobe.record import BlockedStack, TaskStall, Verdict
from geventprobe.worker.record import Running

START_WITH_CELERY = ("start the worker with the celery program (`celery -A APP worker -P "
                     "gevent -c N`: it patches before it imports your app), or put `from "
                     "gevent import monkey; monkey.patch_all()` on the very first line of the "
                     "script that starts it, before celery, your app or the driver is imported")
PSYCOGREEN = ("call psycogreen.gevent.patch_psycopg() where a gevent worker runs it: in a "
              "celery.signals.worker_init receiver, or at the top of the module celery "
              "imports with -A (pip install psycogreen)")


def never_patched(facts: dict) -> bool:
    """Nothing in the worker was patched: select is the standard library's and nobody called
    ``monkey.patch_all()`` (``app.worker_main()`` started it)."""
    patched_all = any(p.get("what") == "patch_all" for p in facts.get("patches") or ())
    return bool(facts) and not facts.get("select_patched") and not patched_all


def _unsent_receivers(facts: dict) -> list[str]:
    """The app's ``worker_process_init`` receivers, when this worker never sent the signal."""
    receivers = facts.get("worker_process_init_receivers") or []
    signals = (facts.get("celery") or {}).get("signals") or {}
    return receivers if receivers and "worker_process_init" not in signals else []


def _where_held(stall: TaskStall | None, stacks: list[BlockedStack]) -> str:
    """`` (its main thread waited at kombu/utils/eventio.py:83 in poll, from worker.py:29)``."""
    if stall is not None and stall.stack:
        inner = stall.stack[-1]
        user = f", from {stall.user_frame}" if stall.user_frame else ""
        return f" (its main thread waited at {inner}{user})"
    if stacks:
        return f" ({blocked.in_words(stacks[0])})"
    return ""


def _gunicorn_words(advice: str | None) -> bool:
    return bool(advice) and ("gunicorn" in advice or "post_worker_init" in advice
                             or "--preload" in advice)


def explain(verdict: Verdict, facts: dict, fired: Collection[str],
            stall: TaskStall | None = None, stacks: list[BlockedStack] | None = None,
            running: Running | None = None, cpu: float | None = None
            ) -> tuple[str | None, str | None]:
    """(cause, advice) of the worker's verdict (its probe task's): BLOCKING, BUSY-WAIT,
    SERIALIZED; (None, None) for OK. ``running``: what ran on the worker's hub while the
    probe task only waited, whose CPU was ``cpu`` CPU-s/s (a BUSY-WAIT may be a greenlet
    of the app's, not the driver's wait function)."""
    stacks = stacks or []
    if verdict is Verdict.OK:
        return None, None
    if verdict is Verdict.BUSY_WAIT:
        found = causes.busy_greenlet(running, "the probe task only waited on the server",
                                     cpu)
        return found if found is not None else causes.explain(Verdict.BUSY_WAIT, facts, False)
    if verdict is Verdict.SERIALIZED:
        return ("the probe tasks, each with its own connection, waited on each other while the "
                "hub ran on time: the server (or a pooler in front of it) runs their queries "
                "one at a time",
                "check the server's or the pooler's limits (max_connections, pgbouncer's "
                "pool size) against the worker's concurrency")
    if verdict is not Verdict.BLOCKING:
        return None, None
    if stall is not None and stall.kind == "never-ready":
        return ("the worker never got ready: its start waits on something"
                + _where_held(stall, stacks),
                "start it by hand and see where it stops (the stack above); an app module "
                "that connects or waits at import time blocks the worker's start")
    if never_patched(facts):
        return ("gevent patched nothing in this worker (select and socket are the standard "
                "library's, nobody called monkey.patch_all()): only the celery program patches "
                "before it imports the app, and app.worker_main() patches nothing, so the "
                "consumer waits for the broker without yielding and the tasks it takes never "
                "get the hub" + _where_held(stall, stacks), START_WITH_CELERY)
    driver = facts.get("driver")
    if driver == "psycopg2" and not (facts.get("psycopg2") or {}).get("wait_callback"):
        cause = ("psycopg2 has no wait callback, so libpq waits in C and the hub stops: every "
                 "task of the worker waits, and so does the consumer that takes tasks off the "
                 "broker")
        unsent = _unsent_receivers(facts)
        if unsent:
            cause += (f"; your worker_process_init receiver ({', '.join(unsent)}) never ran: "
                      "celery sends worker_process_init only from the prefork and solo pools, "
                      "never under -P gevent")
            return cause, PSYCOGREEN + ", not in worker_process_init"
        return cause, PSYCOGREEN
    cooperative = (driver == "psycopg" and (facts.get("psycopg") or {}).get("wait") != "wait_c"
                   and "connect-stall" not in fired) or (
        driver == "psycopg2" and (facts.get("psycopg2") or {}).get("wait_callback"))
    if not driver or cooperative:
        what = "the probe tasks ran" if set(fired) - {"connect-stall"} else "the worker connected"
        return (f"the hub was held while {what}, although the driver cooperates"
                + _where_held(stall, stacks),
                "find the call that holds the hub (who blocked) and make it cooperate with "
                "gevent, or move it out of this worker")
    phases = {"connect"} if set(fired) == {"connect-stall"} else {"waits"}
    cause, advice = causes.explain(Verdict.BLOCKING, facts, False, phases)
    if _gunicorn_words(advice):
        advice = START_WITH_CELERY
    return cause, advice
