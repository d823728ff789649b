"""A password typed in ``--dsn`` leaves geventprobe's own command line as soon as it starts.

The CLI is pointed at a loopback port that accepts connections and never answers, so it
stays alive (waiting on its connect) long enough for ``/proc/<pid>/cmdline`` to be read,
as any user of the machine could. Nothing here starts PostgreSQL or gunicorn.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import psutil
import pytest

SECRET = "pw-never-in-ps-7c1e"


@pytest.fixture
def silent_server():
    """A listening socket that never says a word: a connect to it just waits."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


def _cmdlines(pids) -> dict[int, bytes]:
    found = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                found[pid] = f.read().replace(b"\0", b" ")
        except OSError:
            continue  # exited meanwhile
    return found


@pytest.mark.parametrize("command", [["run", "--builds", "binary", "--workers", "1"],
                                     ["calibrate", "--workers", "1"]])
def test_the_password_leaves_the_process_title(command, silent_server, probe_tmp):
    dsn = f"postgresql://u:{SECRET}@127.0.0.1:{silent_server}/db?connect_timeout=20"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "GEVENTPROBE"))}
    env["TMPDIR"] = probe_tmp
    proc = subprocess.Popen([sys.executable, "-m", "geventprobe", *command, "--dsn", dsn],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen: dict[int, bytes] = {}
    try:
        deadline = time.monotonic() + 15
        # The first instant belongs to Python's start-up (the title is rewritten while click
        # parses): wait until our process says it is geventprobe with a redacted DSN.
        while time.monotonic() < deadline and proc.poll() is None:
            line = _cmdlines([proc.pid]).get(proc.pid, b"")
            if b"***" in line:
                break
            time.sleep(0.02)
        else:
            pytest.fail(f"the title was never rewritten (exit {proc.poll()}): "
                        f"{proc.stderr.read().decode() if proc.poll() is not None else ''}")
        # From then on, for a second: neither it nor any child shows the password.
        until = time.monotonic() + 1.5
        while time.monotonic() < until and proc.poll() is None:
            family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(True)]
            for pid, line in _cmdlines(family).items():
                seen[pid] = line
                assert SECRET.encode() not in line, (pid, line)
            time.sleep(0.05)
        assert proc.poll() is None, "the CLI stopped before it could be watched"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert b"--dsn postgresql://u:***@127.0.0.1" in seen[proc.pid]
    assert SECRET.encode() not in err
    assert b"rewrote its own process title" in err
