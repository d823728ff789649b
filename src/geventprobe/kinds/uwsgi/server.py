"""uWSGI's side of a run of probed WSGI workers: starting it, reading it, stopping it.

Starts the user's uWSGI (their resolved options with geventprobe's few changes,
``config.py``) from an ini in the run dir, so nothing of theirs (an ``env = KEY=secret``)
reaches a command line, and answers what ``app/wsgi_run.run_workers`` asks of a WSGI
server (``WsgiServer``): whether the master still runs, the workers' records, why it
failed in uWSGI's words (its log, its HARAKIRI kills, the app's own error) and how to stop
it. uWSGI's master on SIGINT kills its workers at once and exits ("SIGINT/SIGTERM
received...killing workers..."): that is how it is stopped, in every case.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import ClassVar

import psutil

from geventprobe.dsn import redact
from geventprobe.errors import ProbeError
from geventprobe.processes import children
from geventprobe.processes.run_dir import (
    gone,
    log_tail,
    read_records,
    slow_import_fix,
    still_importing,
)
from geventprobe.processes.run_dir import wait_for as _wait_records
from geventprobe.settings import Thresholds, Workload

# uWSGI's own line when harakiri kills a worker whose request ran too long.
_HARAKIRI = re.compile(r"HARAKIRI ON WORKER \d+ \(pid: (\d+)")
# Lines of uWSGI's log that tell why it stopped, most telling first.
_TELLING = ("Error", "error", "Exception", "unable to", "no app loaded", "!!!", "invalid")


@dataclass
class Server:
    """A uWSGI started for one run of the probe: the WSGI server ``run_workers`` drives."""

    name: ClassVar[str] = "uWSGI"
    proc: object
    run_dir: str
    log_path: str
    timeout: float
    """Their harakiri, s (0: none)."""
    done: bool = False

    def running(self) -> bool:
        """The master still runs."""
        return self.proc.poll() is None

    def wait_for(self, prefix: str, count: int, timeout: float,
                 pids: list[int] | None = None) -> dict | None:
        """Until ``count`` workers wrote ``prefix-<pid>.json`` (None: timeout, the master
        exited, or a worker of ``pids`` died without writing it)."""
        return _wait_records(self.run_dir, prefix, count, timeout, self.running, pids)

    def failure(self, what: str, timeout: float, pids: list[int] | None = None,
                reported: dict | None = None) -> str:
        """Why ``what`` did not happen, in uWSGI's words."""
        log = log_tail(self.log_path, 40)
        if self.proc.poll() is not None:
            return (f"{what}: the uWSGI master (pid {self.proc.pid}) "
                    f"{children.describe_exit(self.proc.returncode)}: {_telling(log)}")
        killed = [ln for ln in log if _HARAKIRI.search(ln)]
        if killed:
            return f"{what}: uWSGI's harakiri killed a worker ({killed[-1].strip()})"
        dead = [p for p in pids or [] if p not in (reported or {}) and gone(p)]
        if dead:
            said = [ln.strip() for ln in log if f"pid: {dead[0]}" in ln]
            return (f"{what}: worker {dead[0]} died mid-probe ("
                    + (f"uWSGI: {said[-1]}" if said else "uWSGI logged nothing about it") + ")")
        return f"{what} within {timeout:.0f} s"

    def refuse_boot(self, boot_timeout: float) -> None:
        """No worker got ready: the app's own error when it failed to load (exit 2)."""
        errors = read_records(self.run_dir, "app-error")
        if errors:
            e = min(errors.values(), key=lambda e: e.pid)
            origin = f" ({e.origin})" if e.origin else ""
            raise ProbeError(f"your app failed to load {e.where}: {redact(e.error)}{origin}: fix "
                             "it, then check that plain uWSGI starts it")
        first = still_importing(self.run_dir)
        if first is not None and self.proc.poll() is None:
            where = "master" if first.pid == self.proc.pid else f"worker {first.pid}"
            raise ProbeError(
                f"your app was still importing in the uWSGI {where} "
                f"{time.monotonic() - first.t:.0f} s after it started, longer than the "
                f"{boot_timeout:g} s the workers have to get ready: "
                f"{slow_import_fix(boot_timeout)}")
        if self.proc.poll() is not None:
            raise ProbeError(f"uWSGI exited at once "
                             f"({children.describe_exit(self.proc.returncode)}): "
                             f"{_telling(log_tail(self.log_path, 40))}: check that plain uWSGI "
                             "starts your app with the same options")

    def timed_out_pids(self) -> list[int]:
        """Workers harakiri killed, from the whole log."""
        try:
            with open(self.log_path, errors="replace") as f:
                return self.timed_out_in(f.read().splitlines())
        except OSError:
            return []

    def timed_out_in(self, lines: list[str]) -> list[int]:
        """The same, from these lines of its log."""
        return sorted({int(m.group(1)) for line in lines for m in _HARAKIRI.finditer(line)})

    def log_tail(self) -> list[str]:
        return log_tail(self.log_path, 40)

    @contextlib.contextmanager
    def owned(self):
        """Stop and reap uWSGI when the block fails or returns."""
        try:
            yield
        finally:
            self.quick_stop()

    def quick_stop(self) -> None:
        """SIGINT: the master kills its workers at once and exits; reaped here.

        The workers are gone within 50 ms, but the master reaps them only at its next look,
        up to a second later (measured: "worker 1 buried after 1 seconds", 1.02-1.07 s a
        stop). Once they are gone, another SIGINT wakes it from that wait (its handler returns
        at once while it is dying) and it goes through its usual exit ("goodbye to uWSGI"):
        one that comes before it is waiting wakes nothing (3 stops of 5 took 1.02 s still),
        so it is sent every 20 ms until the master has exited: 10-40 ms in all.
        """
        try:
            workers = [p.pid for p in psutil.Process(self.proc.pid).children()]
            self.proc.send_signal(signal.SIGINT)
        except (psutil.Error, OSError):
            workers = []
        deadline = time.monotonic() + 1.0
        while workers and not all(gone(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.005)
        while workers and self.proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                self.proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(0.02)
        children.stop(self.proc, signal.SIGINT, timeout=10)

    def finish_previous(self) -> None:
        """Nothing: one uWSGI per run, stopped before the next is started."""

    def release(self) -> None:
        """Remove the run dir (uWSGI is stopped by then)."""
        children.remove_temp_dir(self.run_dir)

    def discard(self) -> None:
        """Stop a uWSGI started ahead of its turn that ``run_workers`` never took over (the
        run ended first, or its build does not import), and remove its run dir."""
        if self.done:
            return
        self.done = True
        self.quick_stop()
        self.release()


def _telling(log: list[str]) -> str:
    """The line of uWSGI's log that tells most about why it stopped."""
    for needle in _TELLING:
        for line in reversed(log):
            if needle in line and "WARNING: you are running uWSGI as root" not in line:
                return line.strip()
    return log[-1].strip() if log else "no output"


def boot(uwsgi: list[str], ini: str, app: str, env: dict[str, str], workload: Workload,
         dsn: str, *, cwd: str, harakiri: float,
         thresholds: Thresholds | None = None, routes_timeout_s: float | None = None,
         go_wait_s: float = 0.0) -> Server:
    """Start uWSGI (``uwsgi``: the program, as their command names it) with ``ini`` and the
    probe in every worker; its workers boot and wait for the parent's go (``go_wait_s``
    longer when it is started ahead of its turn, as ``gunicorn_workers.boot``)."""
    run_dir = children.make_temp_dir("geventprobe-uwsgi-")
    try:
        log_path = os.path.join(run_dir, "uwsgi.log")
        ini_path = os.path.join(run_dir, "uwsgi.ini")
        fd = os.open(ini_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(ini)
        env = dict(os.environ, **env)
        env.update(
            GEVENTPROBE_RUN_DIR=run_dir, GEVENTPROBE_UWSGI_APP=app,
            # Through the environment, not argv: /proc/<pid>/environ is readable by us alone.
            GEVENTPROBE_DSN=dsn,
            GEVENTPROBE_WORKLOAD=json.dumps(dict(workload.to_worker(thresholds),
                                                 go_wait_s=go_wait_s)),
            PYTHONUNBUFFERED="1")
        if routes_timeout_s:
            env["GEVENTPROBE_ROUTES_TIMEOUT_S"] = str(routes_timeout_s)
        proc = children.spawn([*uwsgi, "--ini", ini_path], env=env, log_path=log_path, cwd=cwd)
    except BaseException:
        children.remove_temp_dir(run_dir)
        raise
    return Server(proc=proc, run_dir=run_dir, log_path=log_path, timeout=harakiri)
