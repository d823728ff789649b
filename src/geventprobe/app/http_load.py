"""Open-loop HTTP load at a fixed arrival rate, on loopback, recording each request's latency.

Request ``i`` is due at ``t0 + i / rate`` whatever happened to the requests
before it (open loop). A worker whose hub is blocked cannot accept or answer,
so requests pile up in the listen backlog; each latency runs from the moment
the request was *due* to its last response byte, so that queueing is counted
rather than hidden (a closed loop, or timing from the moment a request got a
socket, would wait politely for the blocked worker and report it as fast).

Everything is bounded: at most ``max_requests``, due within ``max_seconds``,
``max_in_flight`` sockets at once (a request waiting for a socket slot is still
timed from its due time), each request ``timeout_s`` from its due time. Loopback
only: this drives the probe's own gunicorn, never someone else's server.

The load runs on an asyncio loop in a background thread of the parent, which is
not gevent-patched. The generator also records how late it was itself in
sending requests, so a saturated generator is visible instead of silently
inflating the figures.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import time
from collections import Counter
from dataclasses import dataclass

from geventprobe.core.stats import histogram, summarize
from geventprobe.record import RequestFigures

_RESPONSE_LIMIT = 65536


@dataclass(frozen=True)
class LoadSpec:
    """What to send, where, how fast, and the bounds."""

    ports: tuple[int, ...]
    """The gunicorn listening port(s): several when each worker binds its own (reuse_port)."""
    path: str
    rate: float
    """Requests per second, in total."""
    max_requests: int = 20000
    max_seconds: float = 120.0
    """No request is due later than this after the start."""
    timeout_s: float = 30.0
    """A request not answered this long after it was due is an error (``timeout``)."""
    max_in_flight: int = 256
    host: str = "127.0.0.1"
    query: str = ""
    """What each request runs in the worker (reported, not sent)."""

    def __post_init__(self) -> None:
        if not _is_loopback(self.host):
            raise ValueError(f"http load only targets loopback, not {self.host!r}")
        if self.rate <= 0 or not self.ports:
            raise ValueError("http load needs a positive rate and at least one port")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OpenLoopLoad:
    """Sends requests from a background thread between ``start()`` and ``stop()``.

    As a context manager it makes sure the thread is stopped however the block ends.
    """

    def __init__(self, spec: LoadSpec):
        self.spec = spec
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._grace = 0.0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, name="geventprobe-http",
                                        daemon=True)
        self._latencies: list[float] = []
        self._errors: Counter[str] = Counter()
        self._sent = 0
        self._max_late = 0.0
        self._started = 0.0
        self._last_due = 0.0
        self._result: RequestFigures | None = None
        self._failure: BaseException | None = None
        self._in_flight = 0
        self._scheduled_all = False

    def __enter__(self) -> OpenLoopLoad:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop(grace_s=0.0)

    def start(self) -> None:
        """Start sending (returns once the generator runs)."""
        self._thread.start()
        self._ready.wait(10)

    @property
    def idle(self) -> bool:
        """Every request that will be sent was sent and answered (or failed)."""
        return self._scheduled_all and self._in_flight == 0

    def stop(self, grace_s: float = 5.0, guard=None) -> RequestFigures:
        """Stop sending; wait up to ``grace_s`` for requests in flight; return the figures.

        ``guard`` is called while waiting (the run's time limit): what it raises ends the
        wait (the thread is a daemon, and its requests are bounded by their timeout)."""
        if self._result is not None:
            return self._result
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._grace = grace_s
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread.ident is not None:  # started
            deadline = time.monotonic() + grace_s + 10
            while self._thread.is_alive() and time.monotonic() < deadline:
                if guard is not None:
                    guard()
                self._thread.join(0.05)
        self._result = self._figures()
        return self._result

    # -- the generator thread --------------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported in the figures, never raised in a thread
            self._failure = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        spec = self.spec
        slots = asyncio.Semaphore(spec.max_in_flight)
        tasks: set[asyncio.Task] = set()
        loop = self._loop
        t0 = self._started = loop.time()
        i = 0
        while i < spec.max_requests and not self._stop.is_set():
            due = t0 + i / spec.rate
            if due - t0 > spec.max_seconds:
                break
            delay = due - loop.time()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                    break  # stopped while waiting for the next due time
                except asyncio.TimeoutError:
                    pass
            self._max_late = max(self._max_late, loop.time() - due)
            task = asyncio.create_task(self._one(i, due, slots))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            self._last_due = due
            i += 1
        self._sent = i
        self._scheduled_all = True
        await self._stop.wait()
        if tasks:
            _, pending = await asyncio.wait(set(tasks), timeout=self._grace or 0.001)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)

    async def _one(self, i: int, due: float, slots: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        spec = self.spec
        self._in_flight += 1
        try:
            async with slots:
                remaining = due + spec.timeout_s - loop.time()
                if remaining <= 0:
                    raise asyncio.TimeoutError
                port = spec.ports[i % len(spec.ports)]
                status = await asyncio.wait_for(self._request(port, i), remaining)
        except asyncio.CancelledError:
            self._errors["unfinished when the probe ended"] += 1
            raise
        except asyncio.TimeoutError:
            self._errors["timeout"] += 1
            return
        except ConnectionRefusedError:
            self._errors["connection refused"] += 1
            return
        except (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError):
            self._errors["connection reset"] += 1
            return
        except OSError as exc:
            self._errors[f"{type(exc).__name__}"] += 1
            return
        finally:
            self._in_flight -= 1
        if status == 200:
            self._latencies.append((loop.time() - due) * 1e6)
        else:
            self._errors[f"HTTP {status}" if status else "bad response"] += 1

    async def _request(self, port: int, i: int) -> int | None:
        reader, writer = await asyncio.open_connection(self.spec.host, port)
        try:
            writer.write(f"GET {self.spec.path}?n={i} HTTP/1.1\r\nHost: {self.spec.host}\r\n"
                         "User-Agent: geventprobe\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            data = b""
            while len(data) < _RESPONSE_LIMIT:
                chunk = await reader.read(_RESPONSE_LIMIT)
                if not chunk:
                    break
                data += chunk
        finally:
            writer.close()
        return _status(data)

    # -- results ---------------------------------------------------------------------------

    def _figures(self) -> RequestFigures:
        spec = self.spec
        errors = dict(self._errors)
        if self._failure is not None:
            errors[f"generator failed: {type(self._failure).__name__}"] = 1
        completed = len(self._latencies)
        span = self._last_due - self._started if self._sent > 1 else 0.0
        return RequestFigures(
            path=spec.path,
            rate=spec.rate,
            query=spec.query,
            sent=self._sent,
            completed=completed,
            errors=sum(errors.values()),
            error_kinds=errors,
            latency=summarize(self._latencies),
            latency_histogram=histogram(self._latencies),
            duration_s=round(span, 3),
            achieved_rate=round((self._sent - 1) / span, 2) if span > 0 else None,
            generator_late_ms=round(self._max_late * 1000, 3),
        )


def _status(data: bytes) -> int | None:
    """The status code of a raw HTTP response, or None if it is not one."""
    head = data.split(b"\r\n", 1)[0].split()
    if len(head) >= 2 and head[0].startswith(b"HTTP/") and head[1].isdigit():
        return int(head[1])
    return None


def run_for(spec: LoadSpec, seconds: float, grace_s: float = 5.0) -> RequestFigures:
    """Send load for at most ``seconds`` (less once all is answered); return the figures."""
    with OpenLoopLoad(spec) as load:
        load.start()
        end = time.monotonic() + seconds
        while time.monotonic() < end and not load.idle:
            time.sleep(0.01)
        return load.stop(grace_s)
