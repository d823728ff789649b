"""A throwaway redis-server: the broker of a celery run when the user names none.

Like ``postgres.EmbeddedPostgres``: a private temp dir (mode 0700) holds the server's
working dir, its log and its unix socket; nothing is written anywhere else. The server:

- listens on that unix socket only (``port 0``), or with ``tcp=True`` also on 127.0.0.1
  (never another address) at a port picked free a moment before, retried if taken;
- keeps nothing (``save ""``: no RDB snapshot, ``appendonly no``: no AOF), runs in the
  foreground (``daemonize no``: it stays in the process group we stop), with protected
  mode on;
- runs as whoever we are, root included (redis-server only warns about root);
- is started through ``children.spawn``, so it is stopped and reaped however the run
  ends, and the watchdog kills it and removes its dir if geventprobe is SIGKILLed;
- gets ``start_timeout`` seconds to answer PING on its socket, else one line says why.

``GEVENTPROBE_REDIS_SERVER`` names the program to use instead of searching PATH (pointed
at a missing file it makes the "not installed" path testable). The argv holds no secret
(the server has no password: it is reachable by its owner's socket alone, or loopback).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time

from geventprobe.errors import ProbeError
from geventprobe.processes import children
from geventprobe.processes.postgres import free_port

SERVER_ENV = "GEVENTPROBE_REDIS_SERVER"
INSTALL_HINT = ("install it (Debian/Ubuntu: apt-get install redis-server; macOS: brew install "
                "redis) or pass --broker URL to use your own redis or RabbitMQ")
BIND_ATTEMPTS = 3
SOCKET_NAME = "redis.sock"


def find_server() -> str:
    """The redis-server program: $GEVENTPROBE_REDIS_SERVER if set, else the one on PATH."""
    forced = os.environ.get(SERVER_ENV)
    if forced:
        if os.access(forced, os.X_OK) and not os.path.isdir(forced):
            return forced
        raise ProbeError(f"redis-server not found at {SERVER_ENV}={forced}: point it at the "
                         f"redis-server program, unset it, or {INSTALL_HINT}")
    found = shutil.which("redis-server")
    if found is None:
        raise ProbeError(f"redis-server is not installed (the embedded broker of a celery "
                         f"run): {INSTALL_HINT}")
    return found


def _server_env(root: str) -> dict[str, str]:
    """Nothing of ours (GEVENTPROBE_DSN, PG*, the user's broker URL) goes to the server."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C",
            "HOME": root}


def ping(path_or_port: str | int, timeout: float = 1.0) -> bool:
    """True when a redis server answers PING on that unix socket path or loopback port."""
    try:
        if isinstance(path_or_port, int):
            sock = socket.create_connection(("127.0.0.1", path_or_port), timeout=timeout)
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(path_or_port)
        with sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class EmbeddedRedis:
    """Context manager: a running throwaway redis-server; ``url`` tells celery where it is."""

    def __init__(self, *, tcp: bool = False, start_timeout: float = 10.0):
        self.tcp = tcp
        self.start_timeout = start_timeout
        self.root: str | None = None
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def socket_path(self) -> str:
        """The server's unix socket, inside its private dir."""
        return os.path.join(self.root or "", SOCKET_NAME)

    @property
    def url(self) -> str:
        """The broker URL for celery/kombu: the unix socket, or loopback with ``tcp``."""
        if self.tcp:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"redis+socket://{self.socket_path}"

    @property
    def log_path(self) -> str:
        return os.path.join(self.root or "", "redis.log")

    def __enter__(self) -> EmbeddedRedis:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        children.add_guard(self.check_alive)
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def argv(self, program: str) -> list[str]:
        """The server's command line (no secret on it)."""
        return [program,
                "--port", str(self.port if self.tcp else 0),
                "--bind", "127.0.0.1",
                "--protected-mode", "yes",
                "--unixsocket", self.socket_path, "--unixsocketperm", "700",
                "--save", "", "--appendonly", "no",
                "--dir", self.root, "--daemonize", "no",
                "--logfile", "", "--loglevel", "notice"]

    def _start(self) -> None:
        program = find_server()
        # Short path: unix socket paths max out at 107 bytes.
        self.root = children.make_temp_dir("geventprobe-redis-")
        for attempt in range(BIND_ATTEMPTS):
            if self.tcp:
                self.port = free_port()
            self.proc = children.spawn(self.argv(program), env=_server_env(self.root),
                                       log_path=self.log_path, cwd=self.root)
            started = time.monotonic()
            if self._wait_ready():
                return
            code = self.proc.poll()
            children.stop(self.proc, signal.SIGTERM, timeout=5)
            self.proc = None
            # Another program can take the port between free_port() and the server's bind.
            bind_error = self._log_line("bind") if self.tcp else None
            if bind_error is None:
                break
            if attempt == BIND_ATTEMPTS - 1:
                raise ProbeError(
                    f"the embedded redis-server could not listen on 127.0.0.1: the ports it "
                    f"picked were taken by other programs {BIND_ATTEMPTS} times "
                    f"({bind_error}): free some ports, or pass --broker URL")
        # What happened, as it happened: one that exited said why in its log at once.
        what = (f"{children.describe_exit(code)} {time.monotonic() - started:.1f} s after it "
                "was started" if code is not None else
                f"did not answer within {self.start_timeout:g} s")
        raise ProbeError(f"the embedded redis-server {what} ({self._log_tail()}): check that "
                         f"it runs (redis-server --version), or pass --broker URL")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            children.check_guards()
            if self.proc.poll() is not None:
                return False
            if os.path.exists(self.socket_path) and ping(self.socket_path):
                return not self.tcp or ping(self.port)
            time.sleep(0.02)
        return False

    def _log_line(self, text: str) -> str | None:
        """The last line of the server's log that contains ``text``."""
        try:
            with open(self.log_path, errors="replace") as f:
                lines = [ln.strip() for ln in f if text in ln]
        except OSError:
            return None
        return lines[-1] if lines else None

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                lines = [ln.strip() for ln in f if ln.strip()]
        except OSError:
            return "no log"
        return lines[-1] if lines else "no output"

    def check_alive(self) -> None:
        """Raise ProbeError if the server died while the run needs it (a run guard)."""
        proc = self.proc
        if proc is None or proc.poll() is None:
            return
        raise ProbeError(
            f"the embedded redis-server (pid {proc.pid}) "
            f"{children.describe_exit(proc.returncode)} mid-run ({self._log_tail()}): the run "
            "was stopped and everything it started removed; find what stopped it (out of "
            "memory? dmesg) and run again")

    def close(self) -> None:
        """Stop the server (SIGTERM: it saves nothing, so it exits at once) and delete its dir."""
        children.remove_guard(self.check_alive)
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                children.stop(self.proc, signal.SIGTERM, timeout=5)
            self.proc = None
        if self.root is not None:
            children.remove_temp_dir(self.root)
            self.root = None
