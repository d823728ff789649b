"""Child processes and temp dirs that are always stopped, reaped and removed.

pyperf's ``popen_killer`` idea, made hard to defeat:

- every long-lived child (PostgreSQL, initdb, gunicorn) runs in its own session,
  so stopping it reaches its whole process group (gunicorn's workers included),
  even when the leader died first and left orphans behind;
- before a temp dir is removed, whatever still works inside it is killed: that
  reaches what a process group does not (PostgreSQL gives each backend a group of
  its own, and they outlive a killed postmaster for a while);
- every child and temp dir is also recorded in a registry the moment it exists,
  and ``cleanup()`` (which the CLI runs however a command ends) stops and removes
  whatever a context manager did not get to;
- the few steps that must not be torn in half by a signal (start a child and
  record it, stop a child, create or remove a temp dir) run ``shielded()``: a
  SIGINT/SIGTERM that arrives meanwhile is held and raised right after the step;
- a watchdog process (``watchdog.py``) is told every group and temp dir as it comes
  and goes, and cleans up itself if geventprobe dies without doing so (SIGKILL);
- guards (``guarded()``) are checks that every wait loop calls through
  ``check_guards()``: the embedded server's death and the run's time limit end
  the run from whatever phase it is in.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence

import psutil

from geventprobe.errors import ProbeError

# Everything started and not yet stopped, by pid; temp dirs not yet removed.
_live: dict[int, subprocess.Popen] = {}
_temp_dirs: list[str] = []
_guards: list[Callable[[], None]] = []

_shield_depth = 0
_held: BaseException | None = None
# Set by a second Ctrl-C: the user wants out now, so stop() skips the polite wait.
_hurry = False
# Cleans up after us if we are SIGKILLed (watchdog.py); started with the first child.
_watchdog: subprocess.Popen | None = None
# Where ``geventprobe`` is imported from, for the watchdog's interpreter.
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the user must be told about the run's own safety net (the watchdog was killed).
_notices: list[str] = []


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Hold signals that ``deliver()`` receives until the block is over, then raise them."""
    global _shield_depth, _held
    _shield_depth += 1
    try:
        yield
    finally:
        _shield_depth -= 1
        if _shield_depth == 0 and _held is not None:
            exc, _held = _held, None
            raise exc


def _tell_watchdog(*message) -> None:
    """Tell the watchdog (started on first use) what to clean up should we be killed.

    A watchdog that cannot be started or has died is no reason to stop the run: the
    normal cleanup does not need it. One that died is replaced (``check_watchdog``).
    """
    with contextlib.suppress(OSError, ValueError):
        if _watchdog is None or _watchdog.poll() is not None:
            if message[0] in ("ungroup", "undir", "exit"):
                return  # nothing recorded there to take back
            if _watchdog is None:
                _start_watchdog()
            else:
                check_watchdog()
        _watchdog.stdin.write((json.dumps(list(message)) + "\n").encode())
        _watchdog.stdin.flush()


def _start_watchdog() -> None:
    global _watchdog
    # Its own session: a Ctrl-C for the terminal's group must not end it first.
    # Popen's pipe is not inheritable: no other child holds it open.
    _watchdog = subprocess.Popen(
        [sys.executable, "-m", "geventprobe.processes.watchdog"], stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env=_watchdog_env())


def check_watchdog() -> None:
    """If the watchdog died (someone killed it), start another, tell it every process group
    and temp dir recorded so far, and note it for the user: the safety net is back, and they
    are told it was gone. A guard: every wait loop checks it (``check_guards``)."""
    old = _watchdog
    if old is None or old.poll() is None:
        return
    with contextlib.suppress(OSError, ValueError):
        _start_watchdog()
        lines = [["group", pid] for pid in _live] + [["dir", path] for path in _temp_dirs]
        _watchdog.stdin.write("".join(json.dumps(m) + "\n" for m in lines).encode())
        _watchdog.stdin.flush()
        _notices.append(
            f"geventprobe's watchdog (pid {old.pid}) "
            f"{'was ' if old.returncode < 0 else ''}{describe_exit(old.returncode)} mid-run, "
            "so for a moment nothing would have cleaned up had geventprobe been killed too; a "
            f"new one (pid {_watchdog.pid}) took over the {len(_live)} process groups and "
            f"{len(_temp_dirs)} temp dirs of the run")


def take_notices() -> list[str]:
    """What happened to the run's safety net since the last call (for the report's notes)."""
    out = list(_notices)
    _notices.clear()
    return out


def _watchdog_env() -> dict[str, str]:
    """Enough to import geventprobe and psutil; nothing else of ours (no GEVENTPROBE_DSN)."""
    env = {k: os.environ[k] for k in ("PATH", "LANG", "LC_ALL", "HOME") if k in os.environ}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)
    return env


def close_watchdog() -> None:
    """Our own cleanup is done: tell the watchdog so, and reap it."""
    global _watchdog
    proc, _watchdog = _watchdog, None
    if proc is None:
        return
    with contextlib.suppress(OSError, ValueError):
        proc.stdin.write(b'["exit"]\n')
    with contextlib.suppress(OSError, ValueError):
        proc.stdin.close()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def deliver(exc: BaseException) -> None:
    """Raise ``exc`` (from a signal handler) now, or right after the current shielded step."""
    global _held
    if _shield_depth:
        _held = _held or exc
        return
    raise exc


def hurry(on: bool = True) -> None:
    """From now on stop children with SIGKILL at once (a second Ctrl-C); ``False`` undoes it."""
    global _hurry
    _hurry = on


def spawn(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    log_path: str | None = None,
    cwd: str | None = None,
    user: int | None = None,
    group: int | None = None,
) -> subprocess.Popen:
    """Start ``argv`` in a new session, stdout and stderr to ``log_path``; record it."""
    log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        with shielded():
            proc = subprocess.Popen(
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
            _live[proc.pid] = proc
            _tell_watchdog("group", proc.pid)
        return proc
    finally:
        if log_path:
            log.close()


def _group_members(pgid: int) -> list[psutil.Process]:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        # Nobody left in the group, the usual case: no need to look through every process
        # of the machine (50-60 ms here, on every stop).
        return []
    except PermissionError:
        pass  # a member we may not signal: look for it
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
    with shielded():
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGKILL if _hurry else sig)
            try:
                proc.wait(0 if _hurry else timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                proc.wait()
        # Orphans of a leader that died first (gunicorn workers, PostgreSQL backends)
        # are still in the group.
        leftovers = _group_members(pgid)
        for member in leftovers:
            with contextlib.suppress(psutil.Error):
                member.kill()
        psutil.wait_procs(leftovers, timeout=5)
        _live.pop(proc.pid, None)
        _tell_watchdog("ungroup", pgid)


@contextlib.contextmanager
def running(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0
            ) -> Iterator[subprocess.Popen]:
    """Yield ``proc``; stop and reap it however the block ends."""
    try:
        yield proc
    finally:
        stop(proc, sig, timeout)


def wait(proc: subprocess.Popen, timeout: float) -> int | None:
    """Wait for ``proc`` to exit, checking the guards; its exit code, or None on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_guards()
        try:
            return proc.wait(0.05)
        except subprocess.TimeoutExpired:
            continue
    return None


def describe_exit(returncode: int | None) -> str:
    """``exited with code 1`` or ``killed by SIGKILL``, for messages."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


# Where temp dirs go when the user named no temp dir: memory, when it has this much room.
MEMORY_DIR = "/dev/shm"
MEMORY_ROOM = 1 << 30


def temp_root() -> str:
    """Where geventprobe's temp dirs go: the one the user named (``TMPDIR``, else ``TEMP``,
    else ``TMP``: as named, even when it cannot be written, which is then refused, never
    silently replaced as Python's ``tempfile`` would); else ``/dev/shm`` when it is a
    writable directory with 1 GiB free; else the system's (``/tmp``).

    Everything in them lives for one run (the throwaway cluster, the workers' run dirs), so
    memory is the right place. Measured on this project's 2-core VM, whose ``/tmp`` is ext4
    mounted with ``discard``: a file created in a new dir there took 0.2-0.7 ms (0.02 ms in
    ``/dev/shm``), so copying the kept cluster's 966 files took 0.3-0.5 s of system time,
    0.06 s into memory (docs/safety.md).
    """
    named = next((os.environ[n] for n in ("TMPDIR", "TEMP", "TMP") if os.environ.get(n)), None)
    if named:
        return os.path.abspath(named)
    try:
        st = os.statvfs(MEMORY_DIR)
        if st.f_bavail * st.f_frsize >= MEMORY_ROOM and os.access(MEMORY_DIR, os.W_OK | os.X_OK):
            return MEMORY_DIR
    except OSError:
        pass
    return tempfile.gettempdir()


def make_temp_dir(prefix: str) -> str:
    """A new private temp dir (mode 0700) in ``temp_root()``, recorded for ``cleanup()``."""
    root = temp_root()
    try:
        with shielded():
            path = tempfile.mkdtemp(prefix=prefix, dir=root)
            _temp_dirs.append(path)
            _tell_watchdog("dir", path)
    except OSError as exc:
        raise ProbeError(f"cannot create a temp dir in {root} "
                         f"({exc.strerror}): set TMPDIR to a writable directory") from exc
    return path


def kill_inside(path: str) -> None:
    """SIGKILL every process whose working dir is ``path`` or below, and wait for them.

    A process group does not reach everything: PostgreSQL puts each backend in a group
    of its own, so when the postmaster is killed its backends outlive it for a while.
    But they all work in the data dir, inside our temp dir, as gunicorn's workers work
    in the run dir: nothing that runs in a dir we are about to remove may survive it.
    """
    inside = []
    for proc in psutil.process_iter():
        try:
            cwd = proc.cwd()
        except psutil.Error:
            continue
        if cwd == path or cwd.startswith(path + os.sep):
            with contextlib.suppress(psutil.Error):
                proc.kill()
                inside.append(proc)
    psutil.wait_procs(inside, timeout=5)


def remove_temp_dir(path: str | None) -> None:
    """Delete a dir made by ``make_temp_dir``, after killing whatever still works in it."""
    if path is None:
        return
    with shielded():
        kill_inside(path)
        shutil.rmtree(path, ignore_errors=True)
        with contextlib.suppress(ValueError):
            _temp_dirs.remove(path)
        _tell_watchdog("undir", path)


def add_guard(check: Callable[[], None]) -> None:
    """Make ``check`` (which raises ProbeError to end the run) part of ``check_guards()``."""
    _guards.append(check)


def remove_guard(check: Callable[[], None]) -> None:
    """Undo ``add_guard``."""
    with contextlib.suppress(ValueError):
        _guards.remove(check)


@contextlib.contextmanager
def guarded(check: Callable[[], None]) -> Iterator[None]:
    """``check`` is a guard for the duration of the block."""
    add_guard(check)
    try:
        yield
    finally:
        remove_guard(check)


def check_guards() -> None:
    """Run every guard: raises ProbeError when one says the run must end. A killed watchdog
    is replaced on the way (``check_watchdog``)."""
    check_watchdog()
    for check in list(_guards):
        check()


@contextlib.contextmanager
def owned() -> Iterator[None]:
    """Whatever is started or made inside the block is stopped, reaped and removed when the
    block ends, however it ends; what was there before it is left alone (the Python API: a
    pytest session's shared server outlives each probe). The watchdog is closed only when
    nothing of ours is left for it to watch."""
    before_pids, before_dirs = set(_live), set(_temp_dirs)
    try:
        yield
    finally:
        for pid, proc in list(_live.items()):
            if pid not in before_pids:
                stop(proc, signal.SIGTERM, timeout=5)
        for path in list(_temp_dirs):
            if path not in before_dirs:
                remove_temp_dir(path)
        if not _live and not _temp_dirs:
            close_watchdog()


def cleanup() -> tuple[list[int], list[str]]:
    """Stop every child and remove every temp dir still recorded; return what was left.

    The context managers that own them normally got there first: anything this
    finds is what an interruption at the worst moment left behind.
    """
    pids = list(_live)
    dirs = list(_temp_dirs)
    for proc in list(_live.values()):
        stop(proc, signal.SIGTERM, timeout=5)
    for path in dirs:
        remove_temp_dir(path)
    close_watchdog()
    return pids, dirs
