"""``run --app --route``: drive the user's own routes in the probed workers. No printing.

After the driver probe's request phase, in the same gunicorn workers, each route gets:

1. one request alone (its latency and status: what the route costs with nothing else
   running);
2. a burst: ``route_concurrency × workers`` requests, all due at the same instant, each
   timed from that instant to its last byte (queueing counts, as in ``http_load``).

gunicorn's workers share one listening socket, so a request cannot be addressed to a
worker: the kernel hands each connection to whichever worker accepts it first. The burst
is therefore C per worker on average; every worker notes when each of the app's requests
started (``probe_route.wrap``), so the verdict knows how many each really served.

Meanwhile every worker keeps a heartbeat and gevent's monitor thread running and reports
them on its own file (``routes-<pid>.json``), and the parent counts, with psutil, the TCP
connections each worker holds to the server's port (the port of the DSN the workers
use, which may be a proxy's). Everything stays on loopback and is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

import psutil

from geventprobe.dsn import redact
from geventprobe.errors import ProbeError
from geventprobe.worker.probe_route import PATH as PROBE_PATH
from geventprobe.worker.probe_route import WARM_HEADER, warm_marker
from geventprobe.worker.record import RoutePhase

AUTO = "auto"
"""``--route auto``: the app's parameterless GET routes, found for the user (``route_finder``)."""
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
_HEAD_KEPT = 1 << 16
"""Bytes of an answer kept to read its status line; the rest is read and dropped (a route's
latency runs to the last byte of its answer, however long)."""
_POLL_S = 0.05
"""How often a wait for answers checks the run's guards (time limit, server, gunicorn)."""
_PATH = re.compile(r"^/[^\s#]*$")
_NOT_ASCII = re.compile(r"[^\x21-\x7e]+")
# The line of a Python traceback that names the exception: "django.db.utils.DatabaseError: …"
_EXCEPTION_LINE = re.compile(
    r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Failure)):\s*\S.*$")


@dataclass(frozen=True)
class Route:
    """One route of the user's app: a method and a path (requests carry an empty body)."""

    method: str
    path: str
    """As the user wrote it (shown in the report)."""

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def target(self) -> str:
        """The path as sent: every byte outside printable ASCII percent-encoded (UTF-8), as a
        browser does; an HTTP request line carries ASCII only (gunicorn answers raw UTF-8
        with 400). What is already percent-encoded stays as it is."""
        return _NOT_ASCII.sub(lambda m: quote(m.group(0), safe=""), self.path)

    def request_line(self) -> str:
        """``GET /path HTTP/1.1``, as gunicorn measures it against ``limit_request_line``."""
        return f"{self.method} {self.target} HTTP/1.1"


def parse_route(text: str) -> Route:
    """``/path`` (GET) or ``METHOD /path``; one clear line when it is neither."""
    words = str(text).split()
    if len(words) == 1:
        method, path = "GET", words[0]
    elif len(words) == 2:
        method, path = words[0].upper(), words[1]
    else:
        method, path = "", ""
    if method not in METHODS or not _PATH.match(path):
        raise ProbeError(f"--route {text!r} is not a route: give a path such as /login, or a "
                         f"method and a path such as 'POST /login' (methods: "
                         f"{', '.join(METHODS)})")
    # gunicorn gives the app the percent-decoded path (PATH_INFO): /%5F_geventprobe__ is ours.
    if unquote(path.split("?", 1)[0], encoding="latin-1") == PROBE_PATH:
        raise ProbeError(f"--route {text!r}: {PROBE_PATH} is geventprobe's own route: give one "
                         "of your app's")
    return Route(method, path)


def parse_routes(texts) -> list[Route]:
    """Every route, in order, duplicates dropped."""
    return list(dict.fromkeys(parse_route(t) for t in texts))


def server_port(dsn: str) -> int | None:
    """The TCP port the workers reach the server on (None: a unix socket, or unknown)."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(dsn or os.environ.get("DATABASE_URL", ""))
    except Exception:
        return None
    host = str(params.get("host") or os.environ.get("PGHOST") or "").split(",")[0]
    if not host or host.startswith("/"):
        return None
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432").split(",")[0]
    return int(port) if port.isdigit() else None


@dataclass
class RouteRun:
    """What the parent measured for one route (the verdict reads it with the workers')."""

    route: Route
    concurrency: int
    """Requests per worker asked for."""
    lone_status: str
    """``200``…, or ``reset``, ``timeout``, ``refused``…"""
    lone_s: float | None
    burst: list[tuple[str, float]]
    """(status or failure kind, seconds from the burst's due time) per request."""
    t0: float
    """When every request of the burst was due (``time.monotonic``, the workers' clock)."""
    t1: float
    """When the last one ended."""
    connections: dict[int, int] = field(default_factory=dict)
    """Worker pid → most TCP connections it held to the server's port during the burst."""
    log_lines: list[str] = field(default_factory=list)
    """What the workers logged from the lone request to the end of the burst (redacted)."""
    error: str | None = None
    body_bytes: int | None = None
    """Size of the lone request's answer, read to its last byte (None: no answer)."""
    burst_skipped: str | None = None
    """Why no burst was sent (the lone request got no answer in time), else None."""
    timed_out: list[int] = field(default_factory=list)
    """Workers gunicorn killed for WORKER TIMEOUT during this route (from its log)."""
    location: str | None = None
    """Where the lone request's answer redirected to (its ``Location``), if it did."""
    timeout_s: float = 30.0
    """``http_timeout_s``: a request not answered this long after it was due timed out."""
    clocks_due: Clocks = field(default_factory=dict)
    """Each worker's clocks (CPU, waiting for a core) when the burst was due."""
    clocks: list[Clocks | None] = field(default_factory=list)
    """Each worker's clocks as each answer of ``burst`` ended, in the same order."""
    lone_cpu_s: float | None = None
    """CPU the lone request cost the worker that served it (the most any worker's main thread
    ran meanwhile), s; None when not measured."""
    warm_up: WarmUp | None = None
    """The requests sent before the lone one so that every worker had served the route."""


@dataclass
class WarmUp:
    """Before a route's lone request, every worker serves it once: a worker's first request
    pays for what the app does lazily (Django imports its URLconf then), which is no figure
    of the route's own. Its time window is judged apart (``route_rules``)."""

    t0: float
    """When the first warm-up request was due (``time.monotonic``)."""
    t1: float
    """When the last answer ended."""
    requests: int
    """Warm-up requests sent."""
    warmed: list[int]
    """The workers that served the route (their mark), of ``RoutesRun.pids``."""
    workers: int
    """Workers there were to warm."""
    statuses: dict[str, int] = field(default_factory=dict)


@dataclass
class RoutesRun:
    """The whole route phase: each route's figures and each worker's own report."""

    routes: list[RouteRun] = field(default_factory=list)
    workers: dict[int, RoutePhase] = field(default_factory=dict)
    """pid → its ``routes-<pid>.json`` (heartbeat, request start times, monitor events)."""
    error: str | None = None
    server_port: int | None = None
    seconds: float = 0.0
    asked: list[Route] = field(default_factory=list)
    """Every route asked for, measured or not."""
    stopped: bool = False
    """The phase was cut short (gunicorn's master died): no route's figures stand."""
    timeout_s: float | None = None
    """gunicorn's worker timeout in these workers (``--timeout``), s."""
    pids: list[int] = field(default_factory=list)
    """The workers that started the phase (``workers`` may also hold those gunicorn started
    meanwhile in place of killed ones)."""


class GunicornGone(Exception):
    """gunicorn's master exited while the routes were being driven."""


Clocks = dict[int, tuple[float, float]]
"""Worker pid → (seconds its main thread ran, seconds it waited runnable for a core), as
``processes.cpu.clocks`` reads them: where the hub, so every request's Python, runs."""


async def _one(port: int, route: Route, due: float, timeout: float,
               clock: Callable[[], Clocks] | None = None, warm: str | None = None
               ) -> tuple[str, float, int | None, str | None, Clocks | None]:
    """(status or failure kind, seconds from ``due`` to the last byte, bytes answered, the
    ``Location`` of a redirect, the workers' ``clock`` as the answer ended)."""
    loop = asyncio.get_running_loop()
    status: str
    size = location = None
    try:
        code, size, location = await asyncio.wait_for(
            _request(port, route, warm), max(0.001, due + timeout - loop.time()))
        status = str(code) if code else "bad response"
    except asyncio.TimeoutError:
        status = "timeout"
    except ConnectionRefusedError:
        status = "refused"
    except (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError):
        status = "reset"
    except OSError as exc:
        status = type(exc).__name__
    elapsed = loop.time() - due
    # Read at the same moment as the latency: the CPU the workers spent until this answer.
    return status, elapsed, size, location, (clock() if clock is not None else None)


_LOCATION = re.compile(rb"\r\nlocation:[ \t]*([^\r\n]*)", re.IGNORECASE)


async def _request(port: int, route: Route, warm: str | None = None
                   ) -> tuple[int | None, int, str | None]:
    """Send the request and read the answer to its last byte: (status, bytes of its body,
    Location). ``warm``: a warm-up request, marked for the worker (``WARM_HEADER``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    mark = f"{WARM_HEADER}: {warm}\r\n" if warm is not None else ""
    try:
        writer.write(f"{route.request_line()}\r\nHost: 127.0.0.1\r\n{mark}"
                     "User-Agent: geventprobe\r\nContent-Length: 0\r\n"
                     "Connection: close\r\n\r\n".encode())
        await writer.drain()
        head, size = b"", 0
        while True:
            chunk = await reader.read(1 << 18)
            if not chunk:
                break
            size += len(chunk)
            if len(head) < _HEAD_KEPT:  # the status line is all we read of it
                head += chunk[:_HEAD_KEPT - len(head)]
    finally:
        writer.close()
    if not size:
        raise ConnectionResetError
    line = head.split(b"\r\n", 1)[0].split()
    headers, ended, _ = head.partition(b"\r\n\r\n")
    found = _LOCATION.search(headers)
    location = found.group(1).decode("latin-1").strip()[:200] if found else None
    body = size - len(headers) - len(ended) if ended else 0
    return (int(line[1]) if len(line) >= 2 and line[1].isdigit() else None), body, location


def send(port: int, route: Route, n: int, timeout: float,
         guard: Callable[[], None] | None = None,
         clock: Callable[[], Clocks] | None = None, warm: str | None = None
         ) -> tuple[float, float, list, Clocks | None]:
    """``n`` requests at ``route``, all due now: (due time, end time, [(status, s, bytes,
    Location, the workers' clocks at the answer)], the workers' clocks when they were due).
    Without ``clock`` both clocks are None. ``warm``: the warm-up's mark for the workers.

    ``guard`` is called every ``_POLL_S`` while answers are awaited: what it raises ends the
    wait at once (the requests still in flight are dropped), so a slow route cannot hold a
    run past its time limit or past the death of gunicorn or the server.
    """

    async def main():
        loop = asyncio.get_running_loop()
        at_due = clock() if clock is not None else None
        # asyncio's clock is time.monotonic, the workers' clock too.
        due = loop.time()
        task = asyncio.gather(*(_one(port, route, due, timeout, clock, warm)
                                for _ in range(n)))
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=_POLL_S)
                if guard is not None and not task.done():
                    guard()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return due, loop.time(), task.result(), at_due

    return asyncio.run(main())


class ConnectionCounter:
    """Counts, every ``period`` s in a thread, each worker's TCP connections to ``port``."""

    def __init__(self, pids: list[int], port: int | None, period: float = 0.02):
        self.pids, self.port, self.period = pids, port, period
        self.most: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="geventprobe-conns",
                                        daemon=True)

    def count(self, pid: int) -> int | None:
        """Established TCP connections of ``pid`` to the server's port, now."""
        try:
            proc = psutil.Process(pid)
            conns = (proc.net_connections(kind="tcp") if hasattr(proc, "net_connections")
                     else proc.connections(kind="tcp"))
        except psutil.Error:
            return None
        return sum(1 for c in conns if c.raddr and c.raddr.port == self.port
                   and c.status == psutil.CONN_ESTABLISHED)

    def _sample(self) -> None:
        for pid in self.pids:
            n = self.count(pid)
            if n is not None:
                self.most[pid] = max(self.most.get(pid, 0), n)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.period)

    def __enter__(self) -> ConnectionCounter:
        if self.port is not None:
            self._sample()  # the connections already open count too
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(5)


def _log_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _log_since(path: str, offset: int, limit: int = 400) -> list[str]:
    try:
        with open(path, errors="replace") as f:
            f.seek(offset)
            return [redact(ln.rstrip()) for ln in f.readlines()[:limit]]
    except OSError:
        return []


def first_error(lines: list[str]) -> str | None:
    """The line that names the first exception the workers logged (``DatabaseError: …``),
    else the first line gunicorn marked ``[ERROR]``; None when nothing went wrong."""
    for line in lines:
        if _EXCEPTION_LINE.match(line):
            return line.strip()
    for line in lines:
        if "[ERROR]" in line or "Traceback" in line:
            return line.strip()
    return None


_WARM_ROUNDS = 8
"""Rounds of warm-up requests at most, per route..."""
_WARM_S = 5.0
"""...and no new round once this long has passed (a round waits for its answers)."""


def warmed(run_dir: str, mark: str) -> set[int]:
    """The workers that have served a warm-up request marked ``mark`` (their marker files)."""
    prefix = warm_marker(mark, 0).rsplit("-", 1)[0] + "-"
    try:
        names = os.listdir(run_dir)
    except OSError:
        return set()
    return {int(n[len(prefix):]) for n in names
            if n.startswith(prefix) and n[len(prefix):].isdigit()}


def warm_up(port: int, route: Route, mark: str, pids: list[int], run_dir: str,
            timeout_s: float, check: Callable[[], None]) -> WarmUp:
    """Send ``route`` to the workers until each has served it once (its wrapper leaves a
    marker, ``probe_route``): rounds of two requests per worker at once, since gunicorn's
    workers share one socket and a request cannot be addressed to one. Bounded: at most
    ``_WARM_ROUNDS`` rounds, none begun after ``_WARM_S``, none after a request timed out
    (the lone request says so, in its own time)."""
    start = time.monotonic()
    out = WarmUp(t0=start, t1=start, requests=0, warmed=[], workers=len(pids))
    statuses: Counter = Counter()
    for _ in range(_WARM_ROUNDS):
        check()
        due, end, answers, _ = send(port, route, 2 * len(pids), timeout_s, check, warm=mark)
        out.t0 = min(out.t0, due)
        out.t1 = end
        out.requests += len(answers)
        statuses.update(a[0] for a in answers)
        done = warmed(run_dir, mark)
        out.warmed = sorted(done & set(pids))
        # A worker gunicorn killed meanwhile (WORKER TIMEOUT) is no longer to be warmed.
        if {p for p in pids if psutil.pid_exists(p)} <= done or statuses["timeout"] or \
                time.monotonic() - start > _WARM_S:
            break
    out.statuses = dict(statuses)
    return out


def drive(routes: list[Route], *, port: int, pids: list[int], concurrency: int,
          timeout_s: float, log_path: str, dsn: str, guard=None,
          alive: Callable[[], bool] | None = None, run_dir: str | None = None,
          clock: Callable[[], Clocks] | None = None,
          timed_out_in: Callable[[list[str]], list[int]]) -> list[RouteRun]:
    """Each route in turn: the warm-up, the lone request, then the burst with the connections
    counted.

    ``guard`` is called between steps and while answers are awaited (the run's time limit and
    the server's health); ``alive`` says whether gunicorn's master still runs: when it does
    not, ``GunicornGone`` ends the phase (the routes measured so far go with it, in
    ``GunicornGone.args[0]``), since the workers go with their master. ``run_dir``: where
    the workers mark the warm-up requests they served (None: no warm-up). ``clock``: the
    workers' CPU clocks (``processes.cpu.clocks``), read around the lone request and as each
    answer of the burst ends. ``timed_out_in``: the workers the server's log lines say it
    killed for a blocked hub (its worker timeout, in its own words).
    """
    db_port = server_port(dsn)
    out: list[RouteRun] = []

    def check() -> None:
        if guard is not None:
            guard()
        if alive is not None and not alive():
            raise GunicornGone(out)

    for i, route in enumerate(routes):
        check()
        offset = _log_size(log_path)
        warm = (warm_up(port, route, str(i), pids, run_dir, timeout_s, check)
                if run_dir is not None else None)
        if warm is not None:
            time.sleep(0.1)  # the warm-up's connections close before the lone request
        _, _, lone, before = send(port, route, 1, timeout_s, check, clock)
        lone_status, lone_s, size, location, after = lone[0]
        run = RouteRun(route=route, concurrency=concurrency, lone_status=lone_status,
                       lone_s=lone_s, burst=[], t0=0.0, t1=0.0, body_bytes=size,
                       location=location, timeout_s=timeout_s, warm_up=warm,
                       lone_cpu_s=_most_ran(before, after))
        if lone_status == "timeout":
            # A route slower than the limit alone: a burst would only wait that long again.
            run.burst_skipped = (f"no burst: the lone request got no answer within "
                                 f"http_timeout_s = {timeout_s:g} s")
            run.t0 = run.t1 = time.monotonic()
        else:
            time.sleep(0.1)  # let the lone request's connection close in the worker
            with ConnectionCounter(pids, db_port) as counter:
                run.t0, run.t1, burst, due_clocks = send(
                    port, route, concurrency * len(pids), timeout_s, check, clock)
            run.burst = [(status, s) for status, s, _, _, _ in burst]
            run.clocks = [clocks for _, _, _, _, clocks in burst]
            run.clocks_due = due_clocks or {}
            run.connections = dict(counter.most) if db_port else {}
        if not _all_answered(run):
            time.sleep(0.05)  # the log line of the last failure may follow the response
        check()
        run.log_lines = _log_since(log_path, offset)
        run.timed_out = timed_out_in(run.log_lines)
        out.append(run)
        if i + 1 < len(routes):
            time.sleep(0.2)  # a quiet gap between routes: one route's tail stays out of the next
    return out


def _all_answered(run: RouteRun) -> bool:
    """Every request of the route got a 2xx or 3xx answer: no failure for the log to tell."""
    statuses = [run.lone_status, *(status for status, _ in run.burst)]
    return all(s.isdigit() and 200 <= int(s) < 400 for s in map(str, statuses))


def _most_ran(before: Clocks | None, after: Clocks | None) -> float | None:
    """The most CPU any worker's main thread used between two readings (s)."""
    if not before or not after:
        return None
    ran = [after[p][0] - before[p][0] for p in before if p in after]
    return round(max(ran), 6) if ran else None


@contextlib.contextmanager
def phase_files(run_dir: str):
    """The route phase's end: ``routes-stop`` tells every worker to report, however it ends."""
    try:
        yield
    finally:
        with contextlib.suppress(OSError), open(os.path.join(run_dir, "routes-stop"), "w"):
            pass


def worker_timeout_s(routes: list[Route], timeout_s: float) -> float:
    """How long a worker waits in the route phase before it reports anyway."""
    return 60.0 + len(routes) * (2 * timeout_s + 2.0)
