#!/usr/bin/env python3
"""See a gevent fault with the plain server: no geventprobe, the standard library only.

Starts an app's server (gunicorn, uWSGI or any HTTP server; or a celery worker) on
loopback, with a throwaway PostgreSQL (or the one DATABASE_URL / --dsn names) and, for
celery, a throwaway redis-server; sends one request (or task) alone, then N at once; asks
the server's hub meanwhile for something it answers without the database; reads the
worker's CPU; prints the figures and the class they show; stops and removes everything
it started, also on Ctrl-C and on failure.

    python harness.py examples/celery/psycopg2_plain "celery -A tasks worker -P gevent -c 16"
    python harness.py examples/preload "gunicorn -c gunicorn.conf.py -w 1 app:application"
    python harness.py DIR "uwsgi --http-socket 127.0.0.1:{port} --master --processes 1 \\
        --gevent 16 --gevent-monkey-patch --wsgi-file app.py" --request "GET /query" -n 15

The classes, from the figures (the limits are below; harness/README.md has the measurements):

- FAILING: the lone one, or more than 10% of the N, failed (5xx, reset, timeout; a task
  that raised);
- BLOCKING: the N took many times the lone one AND the hub answered late meanwhile: it
  stopped while they waited (celery: also a task that never starts);
- BUSY-WAIT: the busiest process of the server burned CPU while the lone one only waited;
- SERIALIZED: the N took many times the lone one, the hub on time: they queued on each
  other (one connection, a small pool, a lock);
- OK: the N overlapped.

HTTP: ``{port}`` in the command is a free loopback port (gunicorn and uWSGI commands
without it get ``--bind`` / ``--http-socket 127.0.0.1:{port}``); the pings are requests to
a path the app does not have. celery: the worker gets ``CELERY_BROKER_URL`` (celery reads
it before the app's own broker), the pings are celery's remote-control ping (the consumer
answers it on the worker's hub), the times come from celery's task events (switched on by
remote control, as Flower does). The server gets ``DATABASE_URL``. Measure one worker
process (``-w 1``, ``--processes 1``): pings and requests then meet the same hub.

An ``example.json`` beside the app names the command, the request or task, N and the class
expected (harness/README.md); flags win over it. Exit: 0 OK; 1 another class; 2 nothing
measured (one line says why); 130 interrupted. Linux (/proc), Python 3.9+.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field

VERSION = 1
MANIFEST = "example.json"
CLASSES = ("OK", "BLOCKING", "BUSY-WAIT", "SERIALIZED", "FAILING")
PING_PATH = "/__harness_ping__"
# The limits between the classes, measured on the examples (harness/README.md).
SLOW_FACTOR = 1.8        # the N's p90 at least this many times the lone one...
SLOW_MIN_S = 0.05        # ...and this much longer: they did not overlap
LATE_S = 0.1             # a ping this late while the N ran (healthy: at most 0.02 s)...
LATE_OF_LONE = 0.5       # ...and at least this share of the lone one: the hub stopped
BUSY_CPU = 0.5           # CPU-s per wall-s of the busiest process over the lone one...
BUSY_MIN_S = 0.1         # ...judged when the lone one lasts this long (healthy: <= 0.1)
FAILING_SHARE = 0.1      # more than this share of the N failed
STALL_S = 10.0           # celery: none of a batch started within this: it never will
PING_GIVE_UP_S = 5.0     # celery: a ping unanswered this long has no answer
NEVER_STARTED = "never started"
CLK_TCK = os.sysconf("SC_CLK_TCK")
_T0 = time.monotonic()


class Refused(Exception):
    """Nothing can be measured: the message says why and what to do."""


def say(text: str) -> None:
    """Progress on stderr, with the seconds since the start."""
    print(f"[{time.monotonic() - _T0:5.1f} s] {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- what it started

class Started:
    """Every process group and temp dir started here; ``close`` stops and removes them."""

    def __init__(self) -> None:
        self.procs: list[tuple[subprocess.Popen, int]] = []
        self.dirs: list[str] = []

    def spawn(self, argv: list[str], stop: int = signal.SIGINT, **kw) -> subprocess.Popen:
        """``argv`` in a session of its own: its whole process group is stopped at the end."""
        proc = subprocess.Popen(argv, start_new_session=True, stdin=subprocess.DEVNULL, **kw)
        self.procs.append((proc, stop))
        return proc

    def temp_dir(self, prefix: str) -> str:
        path = tempfile.mkdtemp(prefix=prefix)
        self.dirs.append(path)
        return path

    def close(self) -> None:
        """Stop every group (``stop`` signal, SIGKILL after 5 s), reap, kill what still runs
        in our dirs (PostgreSQL's backends have sessions of their own), remove the dirs."""
        held = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        say("stopping what it started")
        try:
            while self.procs:
                proc, stop = self.procs.pop()
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, stop)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
            while self.dirs:
                path = self.dirs.pop()
                for cwd in glob.glob("/proc/[0-9]*/cwd"):
                    with contextlib.suppress(OSError):
                        if (os.readlink(cwd) + os.sep).startswith(path + os.sep):
                            os.kill(int(cwd.split("/")[2]), signal.SIGKILL)
                shutil.rmtree(path, ignore_errors=True)
        finally:
            for s, handler in held.items():
                signal.signal(s, handler)


def tail(path: str, lines: int = 8) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:]).rstrip()
    except OSError:
        return "(no log)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- PostgreSQL, redis

def _pg_bindir() -> str:
    """initdb and postgres: on PATH, from pg_config, or Debian's /usr/lib/postgresql/*/bin."""
    found = [os.path.dirname(os.path.realpath(p)) for p in [shutil.which("initdb")] if p]
    if shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            found.append(subprocess.run(["pg_config", "--bindir"], capture_output=True,
                                        text=True, timeout=10).stdout.strip())
    found += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True,
                    key=lambda p: [int(x) for x in re.findall(r"\d+", p)])
    for bindir in found:
        if all(os.access(os.path.join(bindir, p), os.X_OK) for p in ("initdb", "postgres")):
            return bindir
    raise Refused("no PostgreSQL server programs (initdb, postgres) on PATH or in "
                  "/usr/lib/postgresql/*/bin: install them (apt-get install postgresql), "
                  "or name a server with DATABASE_URL=... or --dsn")


def start_postgres(started: Started, max_connections: int) -> str:
    """A throwaway cluster on 127.0.0.1 (trust auth, nothing synced to disk); its URL."""
    bindir = _pg_bindir()
    root = started.temp_dir("harness-pg-")
    ids: dict = {}
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = None
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                user = user or pwd.getpwnam(name)
        if user is None:
            raise Refused("running as root, and no 'postgres' or 'nobody' account to run "
                          "PostgreSQL as: create one, or name a server with --dsn")
        os.chown(root, user.pw_uid, user.pw_gid)
        path = os.path.dirname(root)
        while path != "/":
            if not os.stat(path).st_mode & 0o001:
                raise Refused(f"PostgreSQL runs as {user.pw_name}, who cannot enter {path}: "
                              "set TMPDIR=/tmp, or name a server with --dsn")
            path = os.path.dirname(path)
        ids = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "HOME": root}
    data, log = os.path.join(root, "data"), os.path.join(root, "postgres.log")
    with open(log, "ab") as out:
        initdb = started.spawn([os.path.join(bindir, "initdb"), "-D", data, "-U", "harness",
                                "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"],
                               env=env, cwd=root, stdout=out, stderr=out, **ids)
        if initdb.wait(120) != 0:
            raise Refused(f"initdb failed ({tail(log, 1)}): check PostgreSQL in {bindir}")
        port = free_port()
        server = started.spawn(
            [os.path.join(bindir, "postgres"), "-D", data, "-p", str(port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={root}",
             "-c", f"max_connections={max_connections}", "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             # Shared memory segments in the data dir: a killed server leaves none in /dev/shm.
             "-c", "dynamic_shared_memory_type=mmap"],
            env=env, cwd=root, stdout=out, stderr=out, **ids)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and server.poll() is None:
        with contextlib.suppress(OSError), open(os.path.join(data, "postmaster.pid")) as f:
            if "ready" in f.read():
                return f"postgresql://harness@127.0.0.1:{port}/postgres"
        time.sleep(0.05)
    raise Refused(f"PostgreSQL did not start ({tail(log, 1)}): name a server with --dsn")


def start_redis(started: Started) -> str:
    """A throwaway redis-server on a unix socket in a private dir, keeping nothing; its URL."""
    program = shutil.which("redis-server")
    if program is None:
        raise Refused("redis-server is not installed (the throwaway broker of a celery "
                      "worker): apt-get install redis-server")
    root = started.temp_dir("harness-redis-")
    sock, log = os.path.join(root, "redis.sock"), os.path.join(root, "redis.log")
    with open(log, "ab") as out:
        proc = started.spawn([program, "--port", "0", "--bind", "127.0.0.1", "--unixsocket",
                              sock, "--unixsocketperm", "700", "--save", "", "--appendonly",
                              "no", "--dir", root, "--daemonize", "no"],
                             stop=signal.SIGTERM, cwd=root, stdout=out, stderr=out)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1)
            s.connect(sock)
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                return f"redis+socket://{sock}"
        time.sleep(0.05)
    raise Refused(f"redis-server did not start ({tail(log, 1)})")


# ---------------------------------------------------------------- the server's CPU

def cpu_seconds(session: int) -> dict[int, float]:
    """User + system CPU seconds of every live process of the server's session."""
    out = {}
    for path in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(path) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # from the state on: state ppid pgrp session ...
            out[int(path.split("/")[2])] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def busy_seconds(pids) -> dict[int, float]:
    """Seconds each process's main thread (a gevent worker's hub: every request's Python)
    ran on a CPU or waited runnable for one (``/proc/<pid>/schedstat``, ns-exact)."""
    out = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/schedstat") as f:
                ran, waited = f.read().split()[:2]
            out[pid] = (int(ran) + int(waited)) / 1e9
        except (OSError, ValueError):
            continue
    return out


class Cpu:
    """``with Cpu(session) as c: ...``: then ``c.busiest`` is the CPU-s per wall-s of the
    process (a worker) that used most, ``c.total`` every process's, and ``c.busy_s`` the
    longest any process's main thread ran or waited for a core meanwhile."""

    def __init__(self, session: int):
        self.session = session

    def __enter__(self) -> Cpu:
        self.t0, self.before = time.monotonic(), cpu_seconds(self.session)
        self.busy_before = busy_seconds(self.before)
        return self

    def __exit__(self, *exc) -> None:
        wall = max(time.monotonic() - self.t0, 1e-9)
        now = cpu_seconds(self.session)
        used = [cpu - self.before.get(pid, 0.0) for pid, cpu in now.items()]
        self.busiest, self.total = max(used, default=0.0) / wall, sum(used) / wall
        self.busy_s = max((b - self.busy_before.get(pid, 0.0)
                           for pid, b in busy_seconds(now).items()), default=0.0)


# ---------------------------------------------------------------- HTTP

@dataclass
class Answer:
    """One request or task: its status ("200", "ok", or what went wrong) and its time."""

    status: str
    seconds: float

    @property
    def failed(self) -> bool:
        if self.status.isdigit():
            return int(self.status) >= 500
        return self.status != "ok"


def http(port: int, method: str, path: str, timeout: float) -> Answer:
    """One request on a connection of its own, timed until the whole answer is in."""
    t0 = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n"
                      "Connection: close\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data = data or chunk
        head = data.split(b" ", 2)
        status = head[1].decode() if len(head) > 1 else "empty answer"
    except socket.timeout:
        status = "timeout"
    except OSError as exc:
        status = type(exc).__name__
    return Answer(status, time.monotonic() - t0)


class HttpServer:
    """The requests go to the app's route, the pings to a path it does not have."""

    def __init__(self, port: int, request: str, timeout: float):
        method, _, path = request.partition(" ")
        if not path.startswith("/"):
            raise Refused(f"request {request!r}: give a method and a path, e.g. 'GET /query'")
        self.port, self.method, self.path, self.timeout = port, method, path, timeout
        self.what = request

    def ready(self) -> bool:
        return http(self.port, "GET", PING_PATH, 2).status.isdigit()

    def one(self) -> Answer:
        answer = http(self.port, self.method, self.path, self.timeout)
        if answer.status in ("404", "405", "410"):
            raise Refused(f"{self.what} answered {answer.status}: the app has no such route")
        return answer

    def many(self, n: int) -> list[Answer]:
        out: list = [None] * n
        go = threading.Barrier(n)

        def send(i: int) -> None:
            go.wait()
            out[i] = http(self.port, self.method, self.path, self.timeout)

        threads = [threading.Thread(target=send, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out

    def ping(self) -> float:
        return http(self.port, "GET", PING_PATH, self.timeout).seconds

    def notes(self) -> dict:
        return {}

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- celery

class CeleryWorker:
    """Tasks sent by name through our broker; celery's task events time them."""

    def __init__(self, broker: str, task: str, args: list, kwargs: dict, timeout: float,
                 log: str, queue: str = "celery"):
        try:
            from celery import Celery
        except ImportError:
            raise Refused("a celery worker is measured with celery itself: pip install "
                          "'celery[redis]' in the Python that runs the harness") from None
        self.app = Celery("harness", broker=broker)
        self.task, self.args, self.kwargs, self.queue = task, args, kwargs, queue
        self.timeout, self.log, self.what = timeout, log, task
        self.events: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.stopping = False
        self.receiver: threading.Thread | None = None
        self.failed: BaseException | None = None  # the event receiver's, if it died
        self.answers_pings = True
        self.logged_ready: float | None = None
        self.conn = self.app.connection_for_write()
        self.last: list = []

    def ready(self) -> bool:
        """It answered a ping (then its events are switched on), or it logged "ready." and
        has answered no ping for 3 s since: a worker whose hub never runs (measured)."""
        if self.receiver is None:
            self.receiver = threading.Thread(target=self._listen, daemon=True)
            self.receiver.start()
        try:
            answered = self.app.control.ping(timeout=0.5, limit=1, connection=self.conn)
        except Exception as exc:  # celery's client itself: not the worker's doing
            raise Refused(client_failed(exc)) from exc
        if self.failed is not None:
            raise Refused(client_failed(self.failed))
        if answered:
            self.app.control.broadcast("enable_events", reply=True, timeout=5, limit=1,
                                       connection=self.conn)
            return True
        if self.logged_ready is None:
            with contextlib.suppress(OSError), open(self.log, errors="replace") as f:
                if " ready." in f.read():
                    self.logged_ready = time.monotonic()
        self.answers_pings = not (self.logged_ready and time.monotonic() - self.logged_ready > 3)
        return not self.answers_pings

    def _listen(self) -> None:
        def on(event: dict) -> None:
            if event.get("type", "").startswith("task-"):
                with self.lock:
                    self.events.setdefault(event["uuid"], {})[event["type"][5:]] = event

        try:
            with self.app.connection() as conn:
                receiver = self.app.events.Receiver(conn, handlers={"*": on})
                while not self.stopping:
                    with contextlib.suppress(OSError):
                        for _ in receiver.itercapture(limit=None, timeout=0.2, wakeup=False):
                            if self.stopping:
                                break
        except Exception as exc:  # told by ready(), in one line
            self.failed = exc

    def one(self) -> Answer:
        return self.many(1)[0]

    def many(self, n: int) -> list[Answer]:
        """Send ``n`` at once; wait until each is done, or none started within STALL_S."""
        sent = []
        with self.app.producer_or_acquire() as producer:
            for _ in range(n):
                t = time.time()
                sent.append((self.app.send_task(self.task, args=self.args, kwargs=self.kwargs,
                                                queue=self.queue, producer=producer).id, t))
        t0 = time.monotonic()
        while time.monotonic() - t0 < self.timeout:
            with self.lock:
                seen = [set(self.events.get(i, ())) for i, _ in sent]
            if all({"succeeded", "failed"} & s for s in seen):
                break
            if time.monotonic() - t0 > STALL_S and not any(s - {"sent", "received"}
                                                           for s in seen):
                break
            time.sleep(0.01)
        with self.lock:
            self.last = [(dict(self.events.get(i, {})), t) for i, t in sent]
        out = []
        for ev, t in self.last:
            end = ev.get("succeeded") or ev.get("failed")
            if end is None:
                out.append(Answer("started, never finished" if "started" in ev
                                  else NEVER_STARTED, time.time() - t))
            else:
                out.append(Answer("ok" if "succeeded" in ev else
                                  f"raised {end.get('exception', '?')}", end["timestamp"] - t))
        return out

    def ping(self) -> float:
        t0 = time.monotonic()
        answered = self.app.control.ping(timeout=PING_GIVE_UP_S, limit=1, connection=self.conn)
        return time.monotonic() - t0 if answered else float("inf")

    def notes(self) -> dict:
        """The last batch by celery's events: queue (sent → started), celery's own runtime
        (what Flower shows: a blocked hub shows as queue, never as runtime)."""
        queue = [ev["started"]["timestamp"] - t for ev, t in self.last if "started" in ev]
        run = [ev["succeeded"]["runtime"] for ev, _ in self.last if "succeeded" in ev]
        return {"received": sum("received" in ev for ev, _ in self.last),
                "started": len(queue),
                "queue_max_s": round(max(queue), 3) if queue else None,
                "runtime_max_s": round(max(run), 3) if run else None,
                "answers_pings": self.answers_pings}

    def close(self) -> None:
        self.stopping = True
        if self.receiver is not None:
            self.receiver.join(2)
        with contextlib.suppress(Exception):
            self.conn.release()


def client_failed(exc: BaseException) -> str:
    """One line for celery's client failing in the harness (a missing module, mostly)."""
    hint = ("pip install 'celery[redis]' (kombu's redis transport needs what the extra "
            "brings)" if isinstance(exc, ImportError) else "is the broker reachable?")
    return f"celery's client failed in the harness: {type(exc).__name__}: {exc}: {hint}"


# ---------------------------------------------------------------- measure, classify

@dataclass
class Figures:
    """What one run measured (seconds), and the class it shows."""

    what: str
    n: int
    lone_s: float = 0.0
    lone_status: str = ""
    lone_cpu: float = 0.0           # CPU-s per wall-s of the busiest process, lone one
    wall_s: float = 0.0             # the N at once: first sent to last done
    p50_s: float = 0.0
    p90_s: float = 0.0
    failed: int = 0
    statuses: dict = field(default_factory=dict)
    burst_cpu: float = 0.0          # CPU-s per wall-s of the busiest process, the N
    burst_busy_s: float = 0.0       # its main thread running or waiting for a core (<= p90)
    ping_idle_s: float = 0.0
    ping_max_s: float = 0.0         # the slowest ping while the N ran
    pings: int = 0
    celery: dict = field(default_factory=dict)
    shows: str = ""
    why: str = ""
    expected: str | None = None


def _p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else 0.0


def measure(target, n: int, session: int) -> Figures:
    """A warm-up; the lone one three times (the median counts); then N at once while a
    thread pings the hub one ping after another."""
    f = Figures(target.what, n)
    say("warm-up")
    warm = target.one()  # imports, pools, first connections
    if warm.status == NEVER_STARTED:
        f.lone_s, f.lone_status, f.celery = warm.seconds, warm.status, target.notes()
        if f.celery["answers_pings"] and not f.celery["received"]:
            raise Refused(f"the worker answers pings but never took the task off queue "
                          f"{target.queue!r}: does it consume that queue (-Q)? Name its "
                          "queue with --queue")
        return classify(f)
    say("alone, three times")
    lone = []
    for _ in range(3):
        with Cpu(session) as cpu:
            answer = target.one()
        lone.append((answer.seconds, answer.status, cpu.busiest))
    f.lone_s, f.lone_status, f.lone_cpu = sorted(lone)[1]
    f.ping_idle_s = min(target.ping() for _ in range(3))
    say(f"{n} at once")
    pings: list[float] = []
    done = threading.Event()

    def pinger() -> None:
        while not done.is_set():
            pings.append(target.ping())
            done.wait(0.01)

    watch = threading.Thread(target=pinger, daemon=True)
    with Cpu(session) as cpu:
        t0 = time.monotonic()
        watch.start()
        burst = target.many(n)
        f.wall_s = time.monotonic() - t0
    done.set()
    watch.join()
    f.burst_cpu = cpu.busiest
    f.p50_s, f.p90_s = _p([a.seconds for a in burst], 0.5), _p([a.seconds for a in burst], 0.9)
    # Read over the whole burst, so it may include CPU spent after the p90 answer: capped.
    f.burst_busy_s = min(cpu.busy_s, f.p90_s)
    f.failed = sum(a.failed for a in burst)
    for a in burst:
        f.statuses[a.status] = f.statuses.get(a.status, 0) + 1
    f.ping_max_s, f.pings, f.celery = max(pings, default=0.0), len(pings), target.notes()
    return classify(f)


def classify(f: Figures) -> Figures:
    """Set ``f.shows`` (the class) and ``f.why`` (the figures that show it)."""
    if f.lone_status == NEVER_STARTED:
        pings = "" if f.celery.get("answers_pings", True) else ", and it answered no ping"
        f.shows, f.why = "BLOCKING", (
            f"a task sent alone never started in {f.lone_s:.0f} s ({f.celery.get('received')} "
            f"received){pings}: the worker's hub never ran it")
        return f
    if Answer(f.lone_status, 0).failed or f.failed > FAILING_SHARE * f.n:
        f.shows, f.why = "FAILING", (f"{f.failed} of {f.n} at once failed (limit "
                                     f"{FAILING_SHARE:.0%}); alone: {f.lone_status}")
        return f
    factor = f.p90_s / f.lone_s if f.lone_s else 0.0
    slow = factor >= SLOW_FACTOR and f.p90_s >= f.lone_s + SLOW_MIN_S
    # A gevent worker runs one request's Python at a time: N requests of a few ms of CPU
    # each take N times one together though they share nothing. SERIALIZED judges what the
    # busiest process's CPU (running, or waiting for a core) does not explain.
    left = f.p90_s - f.burst_busy_s
    queued = (f.lone_s and left / f.lone_s >= SLOW_FACTOR and left >= f.lone_s + SLOW_MIN_S)
    late_limit = max(LATE_S, LATE_OF_LONE * f.lone_s)
    late = f.ping_max_s >= late_limit
    ran = (f"{f.n} at once took {factor:.1f}x the lone one (p90 {f.p90_s:.3f} s against "
           f"{f.lone_s:.3f} s; limit {SLOW_FACTOR}x)")
    pinged = f"a ping waited up to {f.ping_max_s:.3f} s (limit {late_limit:.3f} s)"
    if slow and late:
        f.shows, f.why = "BLOCKING", f"{ran} and {pinged}: the hub stopped while they waited"
    elif f.lone_s >= BUSY_MIN_S and f.lone_cpu >= BUSY_CPU:
        f.shows, f.why = "BUSY-WAIT", (f"the busiest process burned {f.lone_cpu:.2f} CPU-s/s "
                                       f"while the lone one waited {f.lone_s:.3f} s (limit "
                                       f"{BUSY_CPU})")
    elif queued:  # what the CPU leaves is over both limits, so the p90 itself is too
        f.shows, f.why = "SERIALIZED", (
            f"{ran}; the CPU explains {f.burst_busy_s:.3f} s of it, leaving {left:.3f} s = "
            f"{left / f.lone_s:.1f}x; and the hub answered on time ({pinged}): they waited on "
            "each other")
    elif slow:
        f.shows, f.why = "OK", (
            f"{ran}, but the busiest process ran or waited for a core {f.burst_busy_s:.3f} s "
            f"of it: they took turns on the CPU, not on something shared")
    else:
        f.shows, f.why = "OK", f"{f.n} at once took {factor:.1f}x the lone one: they overlapped"
        if late:
            f.why += f" ({pinged}: the server had no room for the pings?)"
    return f


def report(f: Figures, where: str) -> str:
    """The figures, then the class, as a person reads them."""
    lines = [f"{'alone':12}{f.what}: {f.lone_s:.3f} s, {f.lone_status}; the busiest process "
             f"{f.lone_cpu:.2f} CPU-s/s" if f.lone_status != NEVER_STARTED else
             f"{'alone':12}{f.what}: never started in {f.lone_s:.1f} s"]
    if f.statuses:
        lines += [
            f"{f'{f.n} at once':12}done in {f.wall_s:.3f} s, p50 {f.p50_s:.3f} s, p90 "
            f"{f.p90_s:.3f} s; " + ", ".join(f"{k}: {v}" for k, v in sorted(f.statuses.items())),
            f"{'the hub':12}{f.pings} pings while they ran, the slowest {f.ping_max_s:.3f} s "
            f"(idle {f.ping_idle_s:.3f} s); the busiest process {f.burst_cpu:.2f} CPU-s/s, "
            f"on or waiting for a core {f.burst_busy_s:.3f} s of the p90"]
    c = f.celery
    if c:
        queue = f", queued up to {c['queue_max_s']} s" if c.get("queue_max_s") is not None else ""
        run = (f", celery's runtime up to {c['runtime_max_s']} s"
               if c.get("runtime_max_s") is not None else "")
        lines.append(f"{'celery':12}{c['received']} received, {c['started']} started{queue}{run}")
    lines.append(f"{f.shows}: {f.why}")
    if f.expected:
        agrees = "agrees" if f.expected == f.shows else "DISAGREES"
        lines.append(f"expected {f.expected} ({where}): {agrees}")
    return "\n".join(lines)


# ---------------------------------------------------------------- the run

def load_case(directory: str, name: str | None) -> dict:
    """The manifest's case ``name`` (else its first), or {} when there is no manifest."""
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
        if name:
            raise Refused(f"--case {name}: there is no {path}")
        return {}
    try:
        with open(path) as f:
            cases = json.load(f)["cases"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise Refused(f"{path} is not a manifest ({exc}): see harness/README.md") from None
    for case in cases:
        if name in (None, case.get("name")):
            return case
    raise Refused(f"{path} has no case {name!r}: "
                  f"{', '.join(str(c.get('name')) for c in cases)}")


def resolve(argv: list[str]) -> list[str]:
    """The program beside this Python first (a venv's gunicorn, celery, uwsgi), then PATH."""
    if argv[0] == "python":
        return [sys.executable, *argv[1:]]
    beside = os.path.join(os.path.dirname(sys.executable), argv[0])
    return [beside, *argv[1:]] if os.sep not in argv[0] and os.access(beside, os.X_OK) else argv


def http_argv(command: str, port: int, n: int) -> list[str]:
    """The HTTP server's argv, on its loopback port."""
    argv = shlex.split(command)
    name = os.path.basename(argv[0])
    cores = re.search(r"--gevent[ =](\d+)", command)
    if name.startswith("uwsgi") and cores and n >= int(cores.group(1)):
        raise Refused(f"uwsgi --gevent {cores.group(1)} serves at most {cores.group(1)} "
                      f"requests at once: the harness needs room for one more (its pings): "
                      f"-n {int(cores.group(1)) - 1}")
    if "{port}" in command:
        return [a.replace("{port}", str(port)) for a in argv]
    if name == "gunicorn" or argv[1:3] == ["-m", "gunicorn"]:
        return [*argv, "--bind", f"127.0.0.1:{port}"]
    if name.startswith("uwsgi"):
        return [*argv, "--http-socket", f"127.0.0.1:{port}"]
    raise Refused("put {port} in the server's command where it takes its port, e.g. "
                  "--bind 127.0.0.1:{port}: the harness picks a free loopback one")


def run(args: argparse.Namespace, started: Started) -> Figures:
    case = load_case(args.directory, args.case)
    command = args.command or case.get("command")
    if not command:
        raise Refused("no command: give the server's command after the directory, or in "
                      f"{os.path.join(args.directory, MANIFEST)}")
    task = args.task or case.get("task")
    n = args.n or int(case.get("n", 16))
    env = dict(os.environ, PYTHONUNBUFFERED="1", **case.get("env", {}))
    if not (args.dsn or env.get("DATABASE_URL")):
        say("a throwaway PostgreSQL")
    env["DATABASE_URL"] = args.dsn or env.get("DATABASE_URL") or start_postgres(
        started, max(100, 4 * n))
    log = os.path.join(started.temp_dir("harness-server-"), "server.log")
    port = free_port()
    if task:
        say("a throwaway redis-server")
        env["CELERY_BROKER_URL"] = start_redis(started)
        argv = shlex.split(command)
    else:
        argv = http_argv(command, port, n)
    argv = resolve(argv)
    print(f"harness: {shlex.join(argv)}  (in {args.directory})", flush=True)
    with open(log, "ab") as out:
        # A celery worker takes 3 s to stop even cold (SIGQUIT; measured): with every figure
        # in and nothing of it to keep, SIGKILL, as geventprobe does.
        server = started.spawn(argv, stop=signal.SIGKILL if task else signal.SIGINT,
                               cwd=args.directory, env=env, stdout=out, stderr=out)
    try:
        if task:
            target = CeleryWorker(env["CELERY_BROKER_URL"], task,
                                  json.loads(args.args) if args.args else case.get("args", []),
                                  json.loads(args.kwargs) if args.kwargs
                                  else case.get("kwargs", {}), args.timeout, log,
                                  args.queue or case.get("queue", "celery"))
        else:
            if not (args.request or case.get("request")):
                raise Refused("which request? --request 'GET /path' (or in the manifest)")
            target = HttpServer(port, args.request or case["request"], args.timeout)
        try:
            deadline = time.monotonic() + args.start_timeout
            while not target.ready():
                if server.poll() is not None or time.monotonic() > deadline:
                    what = (f"exited ({server.returncode})" if server.poll() is not None
                            else f"did not answer within {args.start_timeout:.0f} s")
                    raise Refused(f"the server {what}; its log ends:\n{tail(log)}")
                time.sleep(0.1)
            figures = measure(target, n, server.pid)
        finally:
            target.close()
    finally:
        if args.keep_log:
            shutil.copy(log, args.keep_log)
    figures.expected = case.get("expect")
    return figures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("directory", help="the app's directory: the server starts there")
    ap.add_argument("command", nargs="?", help="how to start the server (default: the manifest)")
    ap.add_argument("--case", help="a case of the directory's example.json (default: its first)")
    ap.add_argument("--request", help="HTTP: what to send, 'METHOD /path' (e.g. 'GET /query')")
    ap.add_argument("--task", help="celery: the task's name (e.g. tasks.query)")
    ap.add_argument("--args", help="celery: the task's positional arguments, JSON")
    ap.add_argument("--kwargs", help="celery: the task's keyword arguments, JSON")
    ap.add_argument("--queue", help="celery: the queue to send it to (default: celery)")
    ap.add_argument("-n", type=int, help="how many at once (default: the manifest's, else 16)")
    ap.add_argument("--dsn", help="PostgreSQL URL (default: $DATABASE_URL, else a throwaway one)")
    ap.add_argument("--timeout", type=float, default=30.0, help="per request or task, seconds")
    ap.add_argument("--start-timeout", type=float, default=60.0, help="for the server, seconds")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--keep-log", help="copy the server's log here")
    ap.add_argument("--debug", action="store_true", help="a traceback for a failure of ours")
    args = ap.parse_args(argv)
    if not os.path.isdir(args.directory):
        print(f"harness: {args.directory} is not a directory", file=sys.stderr)
        return 2
    started = Started()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        figures = run(args, started)
        print(report(figures, os.path.join(args.directory, MANIFEST)), flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"harness": VERSION, **asdict(figures)}, f, indent=1)
        return 0 if figures.shows == "OK" else 1
    except Refused as exc:
        print(f"harness: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(f"harness: failed: {type(exc).__name__}: {exc} (--debug: the traceback)",
              file=sys.stderr)
        return 2
    finally:
        started.close()
        say("everything it started is stopped and removed")


if __name__ == "__main__":
    sys.exit(main())
