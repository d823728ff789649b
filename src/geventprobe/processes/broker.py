"""The broker of a celery run: the embedded redis-server, or the user's ``--broker URL``.

``broker(url)`` is what a run holds for its duration: with no URL it starts a throwaway
redis-server (``redis.EmbeddedRedis``) and stops it after; with one, it checks first
that the broker answers within a bounded time (``check``), and says in one line what
failed if not. Either way a run gets a ``Broker``: the URL to hand the worker through
its environment (never a command line: it may hold a password) and the same URL with
the password masked, for everything shown.

The probe uses a queue (and a direct exchange) of its own, named per run
(``queue_name``); ``delete_queue`` removes both after the run. Nothing here consumes
from, purges or declares any other queue.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from geventprobe.errors import ProbeError

#: URL schemes a celery run accepts, by the broker they name.
SCHEMES = {"redis": "redis", "rediss": "redis", "redis+socket": "redis",
           "amqp": "amqp", "amqps": "amqp", "pyamqp": "amqp"}
CHECK_TIMEOUT_S = 5.0
QUEUE_PREFIX = "geventprobe."


@dataclass(frozen=True)
class Broker:
    """Where the worker and the probe meet."""

    url: str
    """The real URL: only ever passed through an environment variable."""
    shown: str
    """The URL with any password masked: for messages and reports."""
    kind: str
    """``redis`` or ``amqp``."""
    embedded: bool
    """True for geventprobe's own throwaway redis-server."""


def shown(url: str) -> str:
    """``url`` with its password masked (kombu's own sanitiser, as celery shows URLs)."""
    from kombu.utils.url import maybe_sanitize_url

    try:
        return str(maybe_sanitize_url(url))
    except Exception:
        return "(a broker URL that does not parse)"


def kind_of(url: str) -> str:
    """``redis`` or ``amqp``; ProbeError (one line) for any other scheme."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        given = f"{scheme}://" if scheme else "a URL without a scheme"
        raise ProbeError(f"--broker {shown(url) if scheme else url!r}: {given} is not a broker "
                         "geventprobe speaks to: give redis://, rediss://, redis+socket:// "
                         "or amqp:// (RabbitMQ), or leave --broker out to use a throwaway "
                         "redis-server")
    return SCHEMES[scheme]


def check(url: str, timeout: float = CHECK_TIMEOUT_S) -> Broker:
    """The user's broker, once it answered a connection within ``timeout`` s.

    Raises ProbeError with one line (the URL's password masked) when the scheme is not one
    we speak, the client library is missing, or the broker refuses, is unreachable or does
    not answer in time. The connection runs in a thread so that nothing (a DNS lookup
    included) holds the run longer than ``timeout`` plus a second.
    """
    kind = kind_of(url)
    masked = shown(url)

    def ensure(conn) -> None:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0,
                               timeout=timeout)

    answered, exc = _bounded(url, timeout, ensure, "geventprobe-broker-check")
    fix = ("start it or fix --broker, or leave --broker out to use a throwaway "
           "redis-server")
    if not answered:
        raise ProbeError(f"the broker at {masked} did not answer within {timeout:g} s: {fix}")
    if exc is not None:
        if isinstance(exc, ImportError):
            raise ProbeError(f"cannot talk to the broker at {masked}: {exc} (pip install "
                             "\"celery[redis]\" for redis; RabbitMQ needs no extra)") from None
        reason = str(exc).replace(url, masked).strip() or type(exc).__name__
        raise ProbeError(f"the broker at {masked} is unreachable ({reason}): {fix}") from None
    return Broker(url=url, shown=masked, kind=kind, embedded=False)


@contextlib.contextmanager
def broker(url: str | None = None, *, tcp: bool = False,
           timeout: float = CHECK_TIMEOUT_S) -> Iterator[Broker]:
    """The run's broker: the user's (checked), else a throwaway redis-server, stopped after."""
    if url:
        yield check(url, timeout)
        return
    from geventprobe.processes.redis import EmbeddedRedis

    with EmbeddedRedis(tcp=tcp) as server:
        yield Broker(url=server.url, shown=server.url, kind="redis", embedded=True)


def queue_name() -> str:
    """A queue name of our own for one run: ``geventprobe.<16 hex digits>``."""
    return QUEUE_PREFIX + secrets.token_hex(8)


def delete_queue(url: str, name: str, timeout: float = CHECK_TIMEOUT_S) -> str | None:
    """Remove our queue and our exchange from the broker; None, or why it could not be.

    Refuses any name that is not ours (``geventprobe.`` prefix): nothing else is ever
    deleted. Bounded like ``check``.
    """
    if not name.startswith(QUEUE_PREFIX):
        raise ValueError(f"not a geventprobe queue: {name!r}")

    def delete(conn) -> None:
        from kombu import Exchange, Queue

        channel = conn.channel()
        exchange = Exchange(name, type="direct", channel=channel)
        queue = Queue(name, exchange, routing_key=name, channel=channel)
        # kombu's redis transport deletes the bindings this channel knows of: bind (ours,
        # already there) so that it knows, then delete queue and exchange.
        queue.declare()
        queue.delete()
        exchange.delete()

    answered, exc = _bounded(url, timeout, delete, "geventprobe-queue-delete")
    if not answered:
        return f"the broker did not answer within {timeout:g} s"
    if exc is not None:
        return str(exc).replace(url, shown(url)) or type(exc).__name__
    return None


def _bounded(url: str, timeout: float, work: Callable[[Any], None], name: str
             ) -> tuple[bool, BaseException | None]:
    """Run ``work(connection)`` on a kombu connection to ``url`` in a daemon thread, so that
    nothing (a DNS lookup included) holds the run longer than ``timeout`` plus a second:
    (whether it answered in time, the exception it raised or None)."""
    outcome: list[BaseException | None] = []

    def attempt() -> None:
        try:
            from kombu import Connection

            with Connection(url, connect_timeout=timeout,
                            transport_options={"socket_connect_timeout": timeout,
                                               "socket_timeout": timeout}) as conn:
                work(conn)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=attempt, daemon=True, name=name)
    thread.start()
    thread.join(timeout + 1.0)
    return bool(outcome), (outcome[0] if outcome else None)
