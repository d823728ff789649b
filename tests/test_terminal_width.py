"""At 80 columns, every line geventprobe prints fits: progress, warnings, errors, reports.

Each command runs for real in a pseudo-terminal 80 columns wide, as from a user's shell;
escape sequences are stripped and the output is cut at every carriage return and line
feed: no piece may be wider than 80. A pipe or a file gets each message of geventprobe's
own on one line instead (the other tests read those). The version matrix's lines are the
same progress and report as a run's (its rows are drawn at 80 columns in
``test_render_width.py``); it is not run here, its environments take minutes to make.
``calibrate`` runs in an 80-column terminal in ``test_calibrate.py``.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from geventprobe.processes.postgres import EmbeddedPostgres

WIDTH = 80
ROOT = Path(__file__).parent.parent
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]")


def in_a_terminal(args: list[str], tmpdir: str, env: dict | None = None, cwd: str | None = None,
                  timeout: float = 300) -> tuple[int, list[str]]:
    """Run ``python -m geventprobe ARGS`` in an 80-column pty: (exit code, output lines)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "GEVENTPROBE"))}
    full_env.update(TMPDIR=tmpdir, TERM="xterm", **(env or {}))
    full_env.pop("COLUMNS", None)
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, WIDTH, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "geventprobe", *args], stdin=slave,
                            stdout=slave, stderr=slave, env=full_env, cwd=cwd,
                            start_new_session=True)
    os.close(slave)
    out = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the other side closed: everything has been read
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        else:
            pytest.fail(f"{args} did not finish within {timeout:.0f} s")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(master)
    text = _ESCAPES.sub("", out.decode(errors="replace"))
    return proc.returncode, re.split(r"\r\n|\r|\n", text)


def assert_fits(lines: list[str]) -> None:
    wide = [line for line in lines if len(line) > WIDTH]
    assert not wide, "wider than 80 columns:\n" + "\n".join(wide)


@pytest.fixture(scope="module")
def password_pg():
    with EmbeddedPostgres(max_connections=60, password="pw-" + "x" * 20) as pg:
        yield pg


def test_bad_input_wraps(probe_tmp):
    code, lines = in_a_terminal(["run", "--route", "/login"], probe_tmp)
    assert code == 2
    assert_fits(lines)
    text = " ".join(line.strip() for line in lines if line.strip())
    assert text.startswith("geventprobe: error: --route drives a route of your app")


def test_compare_fits(probe_tmp):
    data = ROOT / "tests" / "data"
    code, lines = in_a_terminal(["compare", str(data / "run-default.json"),
                                 str(data / "run-preload.json")], probe_tmp)
    assert code == 1
    assert_fits(lines)


@pytest.mark.integration
def test_a_run_with_a_password_on_the_command_line_fits(password_pg, probe_tmp, tmp_path):
    out = tmp_path / "r.json"
    code, lines = in_a_terminal(["run", "--builds", "binary,psycopg2", "--workers", "1",
                                 "--greenlets", "8", "--dsn", password_pg.dsn,
                                 "--json", str(out)], probe_tmp)
    assert code == 0, "\n".join(lines)
    assert_fits(lines)
    text = " ".join(line.strip() for line in lines)
    # The warning is one of them (281 characters on one line before).
    assert "geventprobe: warning: the password in --dsn was visible to every user" in text
    assert f"geventprobe: wrote {out}" in text


@pytest.mark.integration
def test_an_app_with_a_route_fits(password_pg, probe_tmp):
    code, lines = in_a_terminal(
        ["run", "--profile", "quick", "--workers", "1", "--app", "app:application",
         "--chdir", str(ROOT / "examples" / "clean"), "--route", "/query"], probe_tmp,
        env={"GEVENTPROBE_DSN": password_pg.dsn})
    assert code == 0, "\n".join(lines)
    assert_fits(lines)
    assert "GET /query" in " ".join(lines)
