"""The watchdog: whatever geventprobe started goes when geventprobe goes, even by SIGKILL.

A SIGKILL cannot be caught, so nothing inside geventprobe can clean up after one.
This small process can: geventprobe starts it (``procs``) before its first child
or temp dir, in a session of its own (a Ctrl-C or ``kill -- -PGID`` of the
terminal's group does not reach it), and tells it over a pipe, one JSON line
each, what it started and what it stopped again::

    ["group", 1234]     a child's process group (gunicorn and its workers, postgres, initdb)
    ["ungroup", 1234]   that group was stopped and reaped
    ["dir", "/tmp/x"]   a temp dir
    ["undir", "/tmp/x"] that dir was removed
    ["exit"]            geventprobe cleaned up itself: nothing to do

The pipe's write end exists in geventprobe alone (no child inherits it), so when
geventprobe dies, however it dies, the watchdog reads end-of-file. Unless it was
told ``exit``, it then SIGKILLs every group still recorded, every process still
working inside a recorded dir (PostgreSQL's backends, each in a group of its
own), and removes the dirs. Then it exits.

Run as ``python -m geventprobe.processes.watchdog``; it imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys


def _kill_groups(groups: set[int]) -> None:
    for pgid in groups:
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)


def sweep(groups: set[int], dirs: list[str]) -> None:
    """SIGKILL the groups and whatever works inside the dirs; remove the dirs."""
    _kill_groups(groups)  # first: the import below takes a moment
    from geventprobe.processes.children import kill_inside  # psutil: only once there is work to do

    for path in dirs:
        kill_inside(path)
        shutil.rmtree(path, ignore_errors=True)


def serve(stream) -> bool:
    """Read the messages until end-of-file; sweep unless told ``exit``. True if it swept."""
    groups: set[int] = set()
    dirs: list[str] = []
    for line in stream:
        try:
            message = json.loads(line)
            kind, args = message[0], message[1:]
        except (ValueError, IndexError, TypeError):
            continue  # half a line: geventprobe died while writing it
        if kind == "exit":
            return False
        if kind == "group":
            groups.add(int(args[0]))
        elif kind == "ungroup":
            groups.discard(int(args[0]))
        elif kind == "dir" and args[0] not in dirs:
            dirs.append(str(args[0]))
        elif kind == "undir" and args[0] in dirs:
            dirs.remove(args[0])
    if not groups and not dirs:
        return False
    sweep(groups, dirs)
    return True


def main() -> None:
    # Our own session already keeps a terminal's Ctrl-C away; ignore a stray one anyway,
    # and SIGHUP when the terminal closes: the end of the pipe is the only signal we obey.
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    serve(sys.stdin)


if __name__ == "__main__":
    main()
