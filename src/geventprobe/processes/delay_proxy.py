"""``--rtt``: a loopback TCP delay proxy between the workers and the server, in its own process.

Each direction of each connection is a delay line, not a throttle: a chunk of bytes
read at time t leaves at t + RTT/2, in order, whatever else is queued; the two
directions are independent. So a query and its answer cost one RTT more, and
connection setup costs what its round trips cost (the TCP handshake itself is not
delayed: ``connect()`` to the proxy completes at once on loopback).

How it keeps time: one thread, one epoll set. The epoll fd is waited on with
``select()``, whose timeout has microsecond resolution (epoll's own rounds to the
millisecond, as asyncio does); the process asks for a 1 µs timer slack
(``PR_SET_TIMERSLACK``), wakes a little before a chunk is due and spins the rest.
On TCP sockets a chunk's time is when the kernel received it (``SO_TIMESTAMPNS``),
so a late wakeup of the reader does not shift it; on unix sockets it is when it
was read. Where allowed (root, CAP_SYS_NICE) it runs at the lowest real-time
priority, so that a busy machine does not hold a due chunk back. Every chunk's
lateness beyond its due time is recorded: that is the proxy's own added delay,
reported in ``DelayProxyFigures`` (docs/rtt.md has the figures measured).

Parent side: ``DelayProxy`` (a context manager) starts it with ``children.spawn`` in a
private temp dir, reads its port from a file there (never from its output), and
at stop reads its figures from the same dir. The proxy dies with its parent
(``PR_SET_PDEATHSIG``, and a check of its parent pid at least twice a second), then
removes its own dir. It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import ctypes
import heapq
import ipaddress
import json
import os
import select
import shutil
import signal
import socket
import struct
import sys
import time
from collections import deque
from dataclasses import dataclass

PORT_FILE = "port"
FIGURES_FILE = "figures.json"
SAMPLES_FILE = "extra_delay_us.bin"
LOG_FILE = "proxy.log"
MAX_RTT_MS = 1000.0
"""Largest ``--rtt`` accepted: beyond a second, timeouts of the probe itself would fire."""

# Wake this long before a chunk is due and spin the rest: a sleeping process wakes
# tens of µs late even with a 1 µs timer slack (measured: benchmarks/proxy_delay.py).
_SPIN_NS = 150_000
_CHUNK = 256 * 1024
# Stop reading a side whose other side has this much queued (a slow reader): memory
# stays bounded, and the lateness that causes is recorded like any other.
_MAX_QUEUED = 4 * 1024 * 1024
_IDLE_S = 0.5
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_CMSG_SPACE = socket.CMSG_SPACE(16)  # one struct timespec
_PR_SET_PDEATHSIG = 1
_PR_SET_TIMERSLACK = 29


# --------------------------------------------------------------------------- parent side


@dataclass(frozen=True)
class Upstream:
    """Where the proxy forwards to: a TCP address or a unix socket path."""

    host: str
    """IP address (TCP) or the socket file's path (unix)."""
    port: int | None = None
    """TCP port; None for a unix socket."""
    shown: str = ""
    """How the record names it (the host as the DSN named it)."""

    @property
    def is_unix(self) -> bool:
        return self.port is None

    def describe(self) -> str:
        """``127.0.0.1:5432``, ``[::1]:5432`` or ``/run/postgresql/.s.PGSQL.5432``."""
        if self.shown:
            return self.shown
        if self.is_unix:
            return self.host
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def argv(self) -> list[str]:
        if self.is_unix:
            return ["--unix", self.host]
        return ["--tcp", self.host, str(self.port)]


# Where libpq looks for a unix socket when the DSN names no host (distribution builds
# use the first; PostgreSQL's own default is /tmp).
SOCKET_DIRS = ("/var/run/postgresql", "/run/postgresql", "/tmp")
"""Where libpq looks for a server's socket when the DSN names no host (Debian's first, then
upstream's /tmp)."""


def _parse(dsn: str) -> dict[str, str]:
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:  # psycopg does not import here: psycopg2 has the same parser
        from psycopg2.extensions import parse_dsn

        return dict(parse_dsn(dsn))
    return {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}


def _make(params: dict[str, str]) -> str:
    try:
        from psycopg.conninfo import make_conninfo
    except ImportError:
        from psycopg2.extensions import make_dsn

        return make_dsn(**params)
    return make_conninfo("", **params)


def upstream_for(dsn: str) -> Upstream:
    """Where the DSN (with libpq's PG* environment and defaults) reaches the server.

    One host only; a service file is not read. Raises ProbeError with the fix otherwise.
    """
    from geventprobe.errors import ProbeError

    params = _parse(dsn)
    if params.get("service") or os.environ.get("PGSERVICE"):
        raise ProbeError("--rtt cannot follow a service file (service= / PGSERVICE): name the "
                         "host and port in the DSN instead")
    host = params.get("host") or os.environ.get("PGHOST", "")
    hostaddr = params.get("hostaddr") or os.environ.get("PGHOSTADDR", "")
    port_text = params.get("port") or os.environ.get("PGPORT", "") or "5432"
    if "," in host or "," in hostaddr or "," in port_text:
        raise ProbeError("--rtt puts a proxy in front of one server: the DSN names several "
                         "hosts; name one (host=... port=...)")
    try:
        port = int(port_text)
    except ValueError:
        raise ProbeError(f"--rtt: the DSN's port {port_text!r} is not a number: fix the "
                         "DSN") from None
    if not hostaddr and (not host or host.startswith("/")):
        folders = [host] if host else [d for d in SOCKET_DIRS
                                        if os.path.exists(f"{d}/.s.PGSQL.{port}")][:1]
        if not folders:
            raise ProbeError("--rtt: the DSN names no host and no PostgreSQL socket was found "
                             f"in {', '.join(SOCKET_DIRS)}: name the host (host=...)")
        return Upstream(os.path.join(folders[0], f".s.PGSQL.{port}"))
    if host.startswith("@"):
        raise ProbeError("--rtt cannot reach an abstract unix socket (host=@...): name a "
                         "socket directory or a TCP host")
    target = hostaddr or host
    try:
        infos = socket.getaddrinfo(target, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ProbeError(f"--rtt: cannot resolve the server's host {target!r} ({exc.strerror}):"
                         " fix the DSN's host") from None
    address = infos[0][4][0]
    shown = f"[{target}]:{port}" if ":" in target else f"{target}:{port}"
    return Upstream(address, port, shown=shown)


def proxied_dsn(dsn: str, port: int, password: str | None = None) -> str:
    """``dsn`` with the server's address replaced by the proxy's; everything else kept.

    ``password``: one the DSN does not carry but libpq found for the server in the user's
    password file (``~/.pgpass``), whose entry names the server's port, not the proxy's: the
    workers get it in their DSN, which reaches them through their environment only.

    ``hostaddr`` is what libpq connects to, so it is always set (a ``PGHOSTADDR`` in the
    environment must not lead around the proxy). A host *name* stays as ``host``: libpq
    then still checks the server's TLS certificate against it (``sslmode=verify-full``).
    """
    params = _parse(dsn)
    host = params.get("host") or os.environ.get("PGHOST", "")
    named = bool(host) and not host.startswith("/") and not _is_address(host)
    params.update(host=host if named else "127.0.0.1", hostaddr="127.0.0.1", port=str(port))
    if password and not params.get("password"):
        params["password"] = password
    return _make(params)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class DelayProxy:
    """Context manager: the proxy process, listening on ``127.0.0.1:port``.

    ``figures`` is filled once it has stopped (``DelayProxyFigures``).
    """

    def __init__(self, upstream: Upstream, rtt_ms: float, start_timeout: float = 15.0,
                 realtime: bool = True):
        from geventprobe.errors import ProbeError

        if not 0 < rtt_ms <= MAX_RTT_MS:
            raise ProbeError(f"--rtt {rtt_ms:g}: the round trip must be more than 0 and at most "
                             f"{MAX_RTT_MS:g} ms")
        self.upstream = upstream
        self.rtt_ms = rtt_ms
        self.start_timeout = start_timeout
        self.realtime = realtime
        self.dir: str | None = None
        self.proc = None
        self.port: int | None = None
        self.figures = None

    def __enter__(self) -> DelayProxy:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        from geventprobe.processes import children

        children.add_guard(self.check_alive)
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _start(self) -> None:
        from geventprobe.errors import ProbeError
        from geventprobe.processes import children

        self.dir = children.make_temp_dir("geventprobe-proxy-")
        # It needs no secret: not the DSN, not PGPASSWORD (its /proc environ stays clean).
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PG", "GEVENTPROBE_")) and k != "DATABASE_URL"}
        argv = [sys.executable, "-m", "geventprobe.processes.delay_proxy",
                "--rtt-ms", repr(self.rtt_ms), "--dir", self.dir, "--parent", str(os.getpid()),
                *self.upstream.argv()]
        if not self.realtime:
            argv.append("--no-realtime")
        self.proc = children.spawn(argv, env=env, log_path=os.path.join(self.dir, LOG_FILE),
                                cwd=self.dir)
        path = os.path.join(self.dir, PORT_FILE)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            children.check_guards()
            if os.path.exists(path):
                with open(path) as f:
                    self.port = int(f.read())
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise ProbeError(f"the --rtt delay proxy did not start ({self._log_tail()}): "
                         "run again with --debug, or without --rtt")

    def _log_tail(self) -> str:
        try:
            with open(os.path.join(self.dir or "", LOG_FILE), errors="replace") as f:
                lines = [ln.strip() for ln in f if ln.strip()]
        except OSError:
            lines = []
        return lines[-1] if lines else "no output"

    def check_alive(self) -> None:
        """Raise ProbeError if the proxy died while the run needs it (a run guard)."""
        from geventprobe.errors import ProbeError
        from geventprobe.processes import children

        proc = self.proc
        if proc is None or proc.poll() is None:
            return
        raise ProbeError(f"the --rtt delay proxy (pid {proc.pid}) "
                         f"{children.describe_exit(proc.returncode)} mid-run ({self._log_tail()}): "
                         "the run was stopped; run again, or without --rtt")

    def close(self) -> None:
        """Stop the proxy, read its figures, remove its dir."""
        from geventprobe.processes import children

        children.remove_guard(self.check_alive)
        if self.proc is not None:
            children.stop(self.proc, signal.SIGTERM, timeout=5)
            self.figures = read_figures(self.dir, self.upstream, self.rtt_ms)
            self.proc = None
        if self.dir is not None:
            children.remove_temp_dir(self.dir)
            self.dir = None


def read_figures(folder: str | None, upstream: Upstream, rtt_ms: float):
    """The ``DelayProxyFigures`` a stopped proxy left in ``folder`` (None if it left none)."""
    from geventprobe.core.stats import summarize
    from geventprobe.record import DelayProxyFigures

    try:
        with open(os.path.join(folder or "", FIGURES_FILE)) as f:
            data = json.load(f)
        samples = array.array("d")
        with open(os.path.join(folder or "", SAMPLES_FILE), "rb") as f:
            samples.frombytes(f.read())
    except (OSError, ValueError):
        return None
    return DelayProxyFigures(rtt_ms=rtt_ms, upstream=upstream.describe(),
                             connections=int(data["connections"]), chunks=int(data["chunks"]),
                             extra_delay_us=summarize(samples))


# --------------------------------------------------------------------------- proxy process


class _Leg:
    """One direction of one connection: bytes read from ``src``, delayed, written to ``dst``."""

    __slots__ = ("blocked", "conn", "dst", "eof_sent", "paused", "queue", "queued_bytes",
                 "reading", "src")

    def __init__(self, conn: _Conn, src: socket.socket, dst: socket.socket):
        self.conn = conn
        self.src = src
        self.dst = dst
        # (due_ns, data) in order; data None is the end of the stream.
        self.queue: deque = deque()
        self.queued_bytes = 0
        self.reading = True
        self.paused = False
        self.eof_sent = False
        self.blocked = False
        """``dst`` did not take a due chunk whole: wait until it can take more."""


class _Conn:
    __slots__ = ("client", "closed", "connected", "down", "up", "upstream")

    def __init__(self, client: socket.socket, upstream: socket.socket):
        self.client = client
        self.upstream = upstream
        self.connected = False
        self.closed = False
        self.up = _Leg(self, client, upstream)
        self.down = _Leg(self, upstream, client)


class _Stop(Exception):
    pass


class Proxy:
    """The proxy's event loop (runs in the proxy process; ``main`` starts it)."""

    def __init__(self, upstream: Upstream, rtt_ms: float, host: str = "127.0.0.1",
                 port: int = 0, parent: int | None = None):
        self.upstream = upstream
        self.half_ns = int(rtt_ms * 1e6 / 2)
        self.parent = parent
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(512)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.ep = select.epoll()
        self.ep.register(self.listener.fileno(), select.EPOLLIN)
        self.socks: dict[int, tuple[socket.socket, _Conn]] = {}
        self.registered: dict[int, int] = {}
        """What each socket is registered for in the epoll set (to skip needless calls)."""
        self.timers: list = []
        self._seq = 0
        self.connections = 0
        self.chunks = 0
        self.extra_us = array.array("d")
        self.stopping = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.ep.register(self._wake_r, select.EPOLLIN)

    # ---- loop

    def stop_soon(self, *_args) -> None:
        """Make ``run`` return (from a signal handler or another thread)."""
        self.stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def run(self) -> None:
        """Forward until ``stop_soon`` or the parent's death."""
        epfd = self.ep.fileno()
        last_parent_check = time.monotonic()
        drain_until = None
        while True:
            if self.stopping and drain_until is None:
                # Told to stop: take no new connection, but deliver what is on its way
                # (a client's Terminate message reaches the server, as it would have).
                self.ep.unregister(self.listener.fileno())
                drain_until = time.monotonic_ns() + self.half_ns + 100_000_000
            if drain_until is not None and (not self.timers or
                                            time.monotonic_ns() > drain_until):
                return
            now = time.monotonic_ns()
            timeout = _IDLE_S
            if self.timers:
                wait_ns = self.timers[0][0] - now
                if wait_ns <= _SPIN_NS:
                    timeout = 0.0
                else:
                    timeout = min(_IDLE_S, (wait_ns - _SPIN_NS) / 1e9)
            if timeout > 0:
                # select() on the epoll fd: a microsecond timeout, unlike epoll_wait's ms.
                select.select([epfd], [], [], timeout)
            for fd, events in self.ep.poll(0):
                self._event(fd, events)
            self._due()
            if self.parent is not None and time.monotonic() - last_parent_check > _IDLE_S:
                last_parent_check = time.monotonic()
                if os.getppid() != self.parent:
                    raise _Stop("parent gone")

    def _due(self) -> None:
        timers = self.timers
        if not timers:
            return
        if timers[0][0] - time.monotonic_ns() > _SPIN_NS:
            return
        # Spin to the first due time: sleeping again would wake too late.
        first = timers[0][0]
        while time.monotonic_ns() < first:
            pass
        now = time.monotonic_ns()
        while timers and timers[0][0] <= now:
            _, _, leg = heapq.heappop(timers)
            self._flush(leg)

    def _event(self, fd: int, events: int) -> None:
        if fd == self.listener.fileno():
            self._accept()
            return
        if fd == self._wake_r:
            with contextlib.suppress(OSError):
                os.read(self._wake_r, 512)
            return
        entry = self.socks.get(fd)
        if entry is None:
            return
        sock, conn = entry
        if conn.closed:
            return
        if sock is conn.upstream and not conn.connected and events & (select.EPOLLOUT |
                                                                      select.EPOLLERR |
                                                                      select.EPOLLHUP):
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._log(f"cannot reach the server at {self.upstream.describe()}: "
                          f"{os.strerror(err)}")
                self._close(conn, reset=False)
                return
            conn.connected = True
            self._update(conn)
            self._flush(conn.up)
            if conn.closed:
                return
        if events & select.EPOLLOUT:
            self._flush(conn.down if sock is conn.client else conn.up)
            if conn.closed:
                return
        if events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
            leg = conn.up if sock is conn.client else conn.down
            if leg.reading and not leg.paused:
                self._read(leg)
            elif events & select.EPOLLERR:
                self._close(conn, reset=True)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of fds: the client sees a refused connection
                self._log(f"accept failed: {exc}")
                return
            self.connections += 1
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
            if self.upstream.is_unix:
                up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                # A non-blocking unix connect fails (EAGAIN) when the server's backlog is
                # full instead of waiting: connect blocking, the server is local.
                up.settimeout(2.0)
                address: tuple | str = self.upstream.host
            else:
                family = socket.AF_INET6 if ":" in self.upstream.host else socket.AF_INET
                up = socket.socket(family, socket.SOCK_STREAM)
                up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                up.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
                address = (self.upstream.host, self.upstream.port)
            if not self.upstream.is_unix:
                up.setblocking(False)
            conn = _Conn(client, up)
            self.socks[client.fileno()] = (client, conn)
            self.socks[up.fileno()] = (up, conn)
            try:
                up.connect(address)
                conn.connected = True
            except (BlockingIOError, InterruptedError):
                if self.upstream.is_unix:
                    self._log(f"cannot reach the server at {self.upstream.describe()}: "
                              "its listen queue is full")
                    self._close(conn, reset=False)
                    continue
            except OSError as exc:
                self._log(f"cannot reach the server at {self.upstream.describe()}: {exc}")
                self._close(conn, reset=False)
                continue
            up.setblocking(False)
            self._update(conn)

    def _read(self, leg: _Leg) -> None:
        try:
            data, ancdata, _flags, _addr = leg.src.recvmsg(_CHUNK, _CMSG_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset by the peer: both sides go
            self._close(leg.conn, reset=True)
            return
        now = time.monotonic_ns()
        received = now
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(payload) >= 16:
                sec, nsec = struct.unpack("qq", payload[:16])
                # The kernel's receive time (wall clock) on our monotonic clock.
                received = sec * 1_000_000_000 + nsec - (time.time_ns() - now)
                received = max(now - 1_000_000_000, min(now, received))
        due = received + self.half_ns
        if not data:
            leg.reading = False
            leg.queue.append((due, None))
            self._update(leg.conn)
        else:
            leg.queue.append((due, data))
            leg.queued_bytes += len(data)
            if leg.queued_bytes > _MAX_QUEUED:
                leg.paused = True
                self._update(leg.conn)
        self._seq += 1
        heapq.heappush(self.timers, (due, self._seq, leg))

    def _flush(self, leg: _Leg) -> None:
        """Send every chunk of ``leg`` that is due, in order, as far as the socket takes it."""
        blocked = leg.blocked
        self._send_due(leg)
        if leg.blocked != blocked:  # wait for room in ``dst``, or stop waiting
            self._update(leg.conn)

    def _send_due(self, leg: _Leg) -> None:
        conn = leg.conn
        if conn.closed or not conn.connected:
            return
        queue = leg.queue
        while queue:
            due, data = queue[0]
            now = time.monotonic_ns()
            if due > now:
                return
            if data is None:
                queue.popleft()
                with contextlib.suppress(OSError):
                    leg.dst.shutdown(socket.SHUT_WR)
                leg.eof_sent = True
                if conn.up.eof_sent and conn.down.eof_sent:
                    self._close(conn, reset=False)
                return
            try:
                sent = leg.dst.send(data)
            except (BlockingIOError, InterruptedError):
                leg.blocked = True
                return
            except OSError:
                self._close(conn, reset=True)
                return
            if isinstance(data, bytes):  # first send of this chunk: its lateness
                self.extra_us.append((now - due) / 1000.0)
                self.chunks += 1
            leg.queued_bytes -= sent
            if sent < len(data):
                queue[0] = (due, memoryview(data)[sent:])
                leg.blocked = True
                return
            queue.popleft()
            leg.blocked = False
        if leg.paused and leg.queued_bytes <= _MAX_QUEUED // 2:
            leg.paused = False
            self._update(conn)

    def _update(self, conn: _Conn) -> None:
        """Register what each socket of ``conn`` waits for now."""
        if conn.closed:
            return
        for sock, inbound, outbound in ((conn.client, conn.up, conn.down),
                                        (conn.upstream, conn.down, conn.up)):
            mask = 0
            if inbound.reading and not inbound.paused:
                mask |= select.EPOLLIN
            # Writable is news only while connecting, or when a due chunk did not fit.
            if outbound.blocked or (sock is conn.upstream and not conn.connected):
                mask |= select.EPOLLOUT
            fd = sock.fileno()
            registered = self.registered.get(fd)
            if registered == mask or (registered is None and mask == 0):
                continue  # the common case: no system call
            # Nothing to wait for: out of the set, or a hung-up socket would report
            # EPOLLHUP on every turn (epoll reports it whatever the mask).
            if mask == 0:
                del self.registered[fd]
                with contextlib.suppress(OSError):
                    self.ep.unregister(fd)
            elif registered is not None:
                self.ep.modify(fd, mask)
                self.registered[fd] = mask
            else:
                self.ep.register(fd, mask)
                self.registered[fd] = mask

    def _close(self, conn: _Conn, reset: bool) -> None:
        if conn.closed:
            return
        conn.closed = True
        for sock in (conn.client, conn.upstream):
            fd = sock.fileno()
            if fd < 0:
                continue
            self.socks.pop(fd, None)
            if self.registered.pop(fd, None) is not None:
                with contextlib.suppress(OSError):
                    self.ep.unregister(fd)
            if reset:  # pass the reset on: the other side sees ECONNRESET, not a clean EOF
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
            sock.close()

    def close(self) -> None:
        """Close every connection and the listening socket."""
        for _sock, conn in list(self.socks.values()):
            self._close(conn, reset=False)
        with contextlib.suppress(OSError):
            self.listener.close()
        self.ep.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def write_figures(self, folder: str) -> None:
        """Counts and samples, for the parent (``read_figures``)."""
        _atomic_write(os.path.join(folder, SAMPLES_FILE), self.extra_us.tobytes())
        _atomic_write(os.path.join(folder, FIGURES_FILE), json.dumps({
            "connections": self.connections, "chunks": self.chunks}).encode())

    def _log(self, text: str) -> None:
        print(f"geventprobe delay proxy: {text}", flush=True)


def _atomic_write(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _prctl(option: int, value: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0)


def _realtime() -> bool:
    """Ask for the lowest real-time priority, where allowed (root, CAP_SYS_NICE).

    A network does not wait for a CPU: without it, a chunk can be late by however long
    the workers keep both cores (measured: benchmarks/proxy_delay.py). The loop sleeps
    between chunks and spins at most ``_SPIN_NS``, so it takes little from them.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except (OSError, AttributeError):
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """The proxy process: ``python -m geventprobe.processes.delay_proxy --rtt-ms MS ...``."""
    parser = argparse.ArgumentParser(prog="geventprobe.processes.delay_proxy")
    parser.add_argument("--rtt-ms", type=float, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--parent", type=int, default=None)
    parser.add_argument("--no-realtime", dest="realtime", action="store_false")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", nargs=2, metavar=("ADDRESS", "PORT"))
    where.add_argument("--unix", metavar="PATH")
    args = parser.parse_args(argv)
    if sys.platform.startswith("linux"):
        # Die with the parent (SIGTERM, so we remove our dir first), and wake on time.
        # PDEATHSIG follows the parent *thread* that started us: geventprobe starts
        # children from its main thread, which lives as long as the run.
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        _prctl(_PR_SET_TIMERSLACK, 1000)
    if args.realtime:
        _realtime()
    if args.parent is not None and os.getppid() != args.parent:
        return 1  # the parent died before we could ask to die with it
    upstream = (Upstream(args.unix) if args.unix
                else Upstream(args.tcp[0], int(args.tcp[1])))
    proxy = Proxy(upstream, args.rtt_ms, parent=args.parent)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, proxy.stop_soon)
    _atomic_write(os.path.join(args.dir, PORT_FILE), str(proxy.port).encode())
    try:
        proxy.run()
    except _Stop:
        pass
    finally:
        proxy.close()
    if args.parent is not None and os.getppid() != args.parent:
        # Nobody will read our figures or remove our dir: leave nothing behind.
        shutil.rmtree(args.dir, ignore_errors=True)
        return 1
    proxy.write_figures(args.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
