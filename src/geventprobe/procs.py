"""Child processes that are always stopped and reaped (pyperf's popen_killer idea).

Every long-lived child (PostgreSQL, gunicorn) runs in its own session, so that
stopping it can reach its whole process group, workers included, even when the
leader died first and left orphans behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence

import psutil


def spawn(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    log_path: str | None = None,
    cwd: str | None = None,
    user: int | None = None,
    group: int | None = None,
) -> subprocess.Popen:
    """Start ``argv`` in a new session, stdout and stderr to ``log_path``."""
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            list(argv),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=user,
            group=group,
            extra_groups=[] if user is not None else None,
        )
    finally:
        if log_path:
            log.close()


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Ask ``proc`` to stop with ``sig``; SIGKILL its whole group after ``timeout``; reap it."""
    pgid = proc.pid  # start_new_session made the child its group leader
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            proc.wait()
    # Orphans of a leader that died first (e.g. gunicorn workers) are still in the group.
    leftovers = _group_members(pgid)
    for member in leftovers:
        with contextlib.suppress(psutil.Error):
            member.kill()
    psutil.wait_procs(leftovers, timeout=5)


@contextlib.contextmanager
def running(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0
            ) -> Iterator[subprocess.Popen]:
    """Yield ``proc``; stop and reap it however the block ends."""
    try:
        yield proc
    finally:
        stop(proc, sig, timeout)
