"""Known errors of gevent deployments: the exception a route raised → its cause and the fix.

Each row was seen in a real worker's log (the example apps of docs/causes.md, measured by
hand) and reads an exception (``core.tracebacks.LoggedError``) against the deployment it
happened in (``Deployment``): the fix never names what this deployment does not do —
"preload" only when the app was preloaded, and the setting that bounds a worker's
concurrency in the words of the kind of worker that runs it (gunicorn's
``worker_connections``, celery's ``-c``: each kind fills ``Deployment`` in).

Pure functions: ``explain(error, deployment)`` → ``ErrorCause``. An error no row knows
gets its own line and the user's frame as the cause, and a fix that says so.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from geventprobe.core.tracebacks import LoggedError


@dataclass(frozen=True)
class Deployment:
    """What the parent knows about how the app runs: the words of a fix depend on it."""

    preload: bool = False
    """The app is imported in the master before fork (gunicorn ``--preload``)."""
    concurrency_setting: str = "the setting that bounds how many requests a worker serves at once"
    """The setting that bounds how much one worker runs at once, in its kind's words
    (``gunicorn's worker_connections (1000 by default)``, ``celery's -c/--concurrency``)."""
    unit: str = "request"
    """What one greenlet serves, in its kind's words: a request, a task."""
    worker_starts: str = ("at import in the module gunicorn loads, or in gunicorn's "
                          "post_worker_init hook")
    """Where a worker does its work before it serves, in its kind's words."""
    master: str = "the gunicorn master"
    """The process that loads the app before the fork, in its kind's words."""
    preloaded: str = "preload_app imported the app"
    """Why the app was loaded in that master."""
    unpreload: str = "drop preload_app"
    """The fix that stops the master loading the app before the workers patch."""
    patched: str = "the gevent worker patched threading"
    """When a worker patches, in its kind's words."""
    early_code: str = "the gunicorn config or a post_fork hook"
    """Code of the user's that runs before a worker patches."""
    fork_hook: str = "post_fork"
    """The hook that runs in each worker after the fork."""
    opened_in_worker: str = "post_worker_init"
    """The hook in which a worker, patched, opens what it needs before it serves."""
    killer: str = "gunicorn"
    """Who kills a worker whose hub stayed blocked, in its kind's words."""
    kills: str = "gunicorn killed worker {pids} (WORKER TIMEOUT)"
    """The server's kill of a worker whose hub stayed blocked (``{pids}``)."""
    timeout: str = "gunicorn's timeout"
    """That kill's limit, by name."""
    timeout_flag: str = "--timeout"
    """That limit as the user sets it."""
    concurrency: int | None = None
    """Requests (tasks) the busiest worker served at once during the burst."""
    connections: int | None = None
    """Server connections that worker held at most during the burst."""
    root: str | None = None
    """The app's directory: frames below it are shown relative to it."""
    driver_blocking: tuple[str, str] | None = None
    """(cause, fix) of the driver's own BLOCKING verdict when the workers' facts say it
    waits in C without yielding (``core/causes.py``): a stall in a database call is that."""



@dataclass(frozen=True)
class ErrorCause:
    """Why a route (task) failed, and what to do, in words that fit the deployment."""

    key: str | None
    """The known error's key (``pool-timeout``…); None for an error no row knows."""
    cause: str
    fix: str


@dataclass(frozen=True)
class KnownError:
    """One row: which exceptions it matches, and the cause and fix it gives."""

    key: str
    types: tuple[str, ...]
    """Exception class names (the last dotted part), any of them."""
    message: re.Pattern
    """Searched in the message."""
    explain: Callable[[LoggedError, Deployment], tuple[str, str]]
    needs_preload: bool = False
    """Only when the app was preloaded (the same words mean something else otherwise)."""


def _at(error: LoggedError, d: Deployment) -> str:
    """`` at app.py:29 in application`` when the user's frame is known."""
    return f" at {error.user_frame.where(d.root)}" if error.user_frame else ""


def _load(d: Deployment) -> str:
    """``12 concurrent requests on 2 server connections`` from the burst, when measured."""
    if d.concurrency and d.connections is not None:
        conns = "connection" if d.connections == 1 else "connections"
        return f" ({d.concurrency} concurrent {d.unit}s on {d.connections} server {conns})"
    if d.concurrency:
        return f" ({d.concurrency} concurrent {d.unit}s in one worker)"
    return ""


def _made_in_master(d: Deployment) -> str:
    """The extra step when a preloaded app makes its connections at import."""
    return (" and make it in each worker, not at import (preload_app imports the app in the "
            "master), or close it in post_fork" if d.preload else "")


def _shared_psycopg2(e: LoggedError, d: Deployment) -> tuple[str, str]:
    return (f"one psycopg2 connection used by several greenlets at once{_at(e, d)}: "
            "psycogreen makes it asynchronous, and a second execute while the first query "
            f"waits is refused{_load(d)}",
            f"give each {d.unit} (greenlet) its own connection: open one per {d.unit}, or "
            f"take it from a pool sized to {d.concurrency_setting}" + _made_in_master(d))


def _shared_psycopg(e: LoggedError, d: Deployment) -> tuple[str, str]:
    return (f"one psycopg connection used by two callers at once{_at(e, d)}: a query was "
            f"sent while another was still in progress{_load(d)}",
            f"give each {d.unit} (greenlet) its own connection (psycopg_pool.ConnectionPool "
            f"sized to {d.concurrency_setting}), and never share a connection with a thread "
            "or greenlet that bypasses its lock" + _made_in_master(d))


def _pool_fix(d: Deployment, knob: str) -> str:
    return (f"size the pool ({knob}) to the {d.unit}s a worker serves at once, or lower "
            f"{d.concurrency_setting} to the pool's size; a longer timeout only turns the "
            "failures into waiting")


def _pool_timeout(e: LoggedError, d: Deployment) -> tuple[str, str]:
    return (f"the pool ran out of connections{_at(e, d)}: {d.unit}s waited longer than the "
            f"pool's timeout for a connection and gave up{_load(d)}",
            _pool_fix(d, "psycopg_pool's max_size"))


def _pool_full_queue(e: LoggedError, d: Deployment) -> tuple[str, str]:
    return (f"the pool's queue of waiting {d.unit}s was full{_at(e, d)} (psycopg_pool "
            f"max_waiting){_load(d)}",
            _pool_fix(d, "psycopg_pool's max_size, and max_waiting"))


def _queuepool_timeout(e: LoggedError, d: Deployment) -> tuple[str, str]:
    size = re.search(r"size (\d+) overflow (\d+)", e.message)
    limit = f" of {int(size[1]) + int(size[2])}" if size else ""
    return (f"SQLAlchemy's pool{limit} ran out of connections{_at(e, d)}: {d.unit}s waited "
            f"pool_timeout for a connection and gave up{_load(d)}",
            _pool_fix(d, "create_engine's pool_size + max_overflow"))


def _django_thread(e: LoggedError, d: Deployment) -> tuple[str, str]:
    if d.preload:
        return (f"Django's database connection object was made in {d.master} "
                f"({d.preloaded}, and something touched django.db.connection at "
                f"import) before {d.patched}: in the worker every "
                "greenlet is another thread, and Django refuses to share it",
                "do not touch the database at import (module-level queries, "
                f"connection.vendor, a check at start-up), or {d.unpreload}, or call "
                f"django.db.connections.close_all() in {d.fork_hook}")
    return ("Django's database connection object was made in one thread and used in another: "
            f"made before gevent patched threading (in {d.early_code}?), or kept in a global "
            "shared by greenlets",
            "let Django open its connections in the request (django.db.connection), and do not "
            f"touch the database in {d.early_code} before the worker patched")


def _master_connection(e: LoggedError, d: Deployment) -> tuple[str, str]:
    return (f"a connection made in {d.master} and inherited by every worker{_at(e, d)}: "
            "the workers talk to one server backend over one socket, and their queries and "
            f"answers cross ({d.preloaded}, which connected at import)",
            "open connections in each worker, never at import: in the first request, or in "
            f"{d.opened_in_worker}; or close the master's in {d.fork_hook}; or {d.unpreload}")


def _protocol_confused(e: LoggedError, d: Deployment) -> tuple[str, str]:
    return (f"a connection's protocol state was confused{_at(e, d)}: two greenlets or two "
            "processes used it at once",
            f"give each {d.unit} (greenlet) its own connection, opened in the worker")


def _too_many_clients(e: LoggedError, d: Deployment) -> tuple[str, str]:
    return ("the server refused a connection: workers × the connections each opens is more "
            "than the server's max_connections",
            "lower the pool's size or the number of workers, or raise max_connections "
            "(a pooler such as PgBouncer in front of the server)")


def _loop_exit(e: LoggedError, d: Deployment) -> tuple[str, str]:
    where = ("a lock, queue or connection made in the master before the workers patched "
             f"({d.preloaded})" if d.preload else
             f"a lock, queue or connection made before gevent patched (in {d.early_code}), "
             "or a greenlet waiting on itself")
    return (f"a greenlet waited on something nothing in this worker will ever wake{_at(e, d)}: "
            f"{where}",
            "make locks, queues and connections after gevent patched: in the app's module "
            "(without preload) or lazily in the request")


KNOWN: tuple[KnownError, ...] = (
    KnownError("shared-connection", ("ProgrammingError",),
               re.compile(r"cannot be used while an asynchronous query is underway"),
               _shared_psycopg2),
    KnownError("shared-connection", ("OperationalError", "InterfaceError"),
               re.compile(r"another command is already in progress"), _shared_psycopg),
    KnownError("pool-timeout", ("PoolTimeout",),
               re.compile(r"couldn't get a connection"), _pool_timeout),
    KnownError("pool-timeout", ("TooManyRequests",),
               re.compile(r"requests waiting"), _pool_full_queue),
    KnownError("pool-timeout", ("TimeoutError",),
               re.compile(r"QueuePool limit of size \d+ overflow \d+ reached"),
               _queuepool_timeout),
    KnownError("django-thread-sharing", ("DatabaseError",),
               re.compile(r"DatabaseWrapper objects created in a thread can only be used in "
                          r"that same thread"), _django_thread),
    KnownError("master-connection",
               ("InternalError", "DuplicatePreparedStatement", "OperationalError",
                "DatabaseError", "ProtocolViolation"),
               re.compile(r"got no result from the query|prepared statement \"_pg3_\d+\" "
                          r"already exists|lost synchronization with server|"
                          r"decryption failed or bad record mac|unexpected response from "
                          r"server|message type 0x\w+ arrived from server"),
               _master_connection, needs_preload=True),
    KnownError("protocol-confused",
               ("InternalError", "DuplicatePreparedStatement", "OperationalError",
                "DatabaseError", "ProtocolViolation"),
               re.compile(r"got no result from the query|prepared statement \"_pg3_\d+\" "
                          r"already exists|lost synchronization with server|unexpected "
                          r"response from server|message type 0x\w+ arrived from server"),
               _protocol_confused),
    KnownError("too-many-clients", ("OperationalError",),
               re.compile(r"too many clients already|remaining connection slots are reserved"),
               _too_many_clients),
    KnownError("loop-exit", ("LoopExit",),
               re.compile(r"would block forever"), _loop_exit),
)


def lookup(error: LoggedError, deployment: Deployment) -> KnownError | None:
    """The first row that matches ``error`` in this deployment, or None."""
    for row in KNOWN:
        if row.needs_preload and not deployment.preload:
            continue
        if error.name in row.types and row.message.search(error.message):
            return row
    return None


def explain(error: LoggedError, deployment: Deployment) -> ErrorCause:
    """The cause and fix of ``error`` in ``deployment``: a known row's, else its own words."""
    row = lookup(error, deployment)
    if row is not None:
        cause, fix = row.explain(error, deployment)
        return ErrorCause(row.key, f"{error.line} — {cause}", fix)
    where = f", raised at {error.user_frame.text(deployment.root)}" if error.user_frame else ""
    fix = "fix the error the workers logged" + (
        f" at {error.user_frame.where(deployment.root)}" if error.user_frame else "")
    if deployment.preload:
        fix += ("; under preload_app, anything the app made at import (connections, clients, "
                "locks) was made in the master and is shared by every worker: make it in each "
                "worker, or close it in post_fork")
    return ErrorCause(None, f"{error.line}{where}", fix)
