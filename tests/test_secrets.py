"""A password in the DSN never reaches a command line, an output, a log or the JSON.

A real server that requires a password (scram-sha-256 over TCP) and a real run:
while it is in progress, every process's ``/proc/<pid>/cmdline`` on the machine is
read again and again; none may hold the password. The workers get the DSN through
their environment, which only their owner can read.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import time

import psutil
import pytest
from test_faults import CliProcess

from geventprobe.processes.postgres import EmbeddedPostgres

pytestmark = pytest.mark.integration

PASSWORD = "gp-" + secrets.token_hex(12)
SMALL = ["--workers", "2", "--greenlets", "8"]


@pytest.fixture(scope="module")
def pg():
    with EmbeddedPostgres(max_connections=60, password=PASSWORD) as server:
        yield server


def cmdlines() -> dict[int, bytes]:
    """Every process's command line, read from /proc as any user could."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                found[int(entry)] = f.read().replace(b"\0", b" ")
        except OSError:
            continue  # exited meanwhile
    return found


def watch_argv(run: CliProcess, allowed: bytes | None = None) -> set[int]:
    """Until the run exits: fail if a command line holds the password; the workers seen.

    ``allowed``: the command line the user typed, which may hold it (their choice). A
    child shows it too for the instant between fork and exec, before it is anything.
    """
    secret = PASSWORD.encode()
    workers = set()
    while run.proc.poll() is None:
        ours = {p.pid for p in run.watch()}
        for pid, line in cmdlines().items():
            if allowed is not None and line == allowed:
                continue
            assert secret not in line, f"pid {pid} has the password on its command line: {line!r}"
            if pid in ours and b"geventprobe.worker" in line:
                workers.add(pid)
                _check_environment(pid)
        time.sleep(0.005)
    return workers


def _check_environment(pid: int) -> None:
    """The DSN reached the worker through its environment, which only its owner may read."""
    try:
        mode = os.stat(f"/proc/{pid}/environ").st_mode
        environ = psutil.Process(pid).environ()
    except (OSError, psutil.Error):
        return  # exited meanwhile
    assert not mode & (stat.S_IRGRP | stat.S_IROTH)
    if "GEVENTPROBE_RUN_DIR" in environ:
        assert PASSWORD in environ.get("GEVENTPROBE_DSN", "")


def no_secret_anywhere(run: CliProcess, *paths) -> None:
    texts = [run.output()] + [p.read_text() for p in paths]
    for text in texts:
        assert PASSWORD not in text


def test_password_dsn_from_the_environment(pg, probe_tmp, tmp_path):
    out = tmp_path / "r.json"
    run = CliProcess(["run", *SMALL, "--builds", "binary,psycopg2-green", "--json", str(out)],
                     probe_tmp, tmp_path, env={"GEVENTPROBE_DSN": pg.dsn})
    try:
        workers = watch_argv(run)
        code, stdout, stderr = run.finish()
    finally:
        run.kill_all()
    # The run authenticated with the password (so the workers had it) and worked.
    assert code == 0, stdout + stderr
    assert workers, "no gunicorn worker was seen while the run was in progress"
    result = json.loads(out.read_text())
    assert [b["verdict"] for b in result["builds"]] == ["OK", "OK"]
    assert result["server"]["embedded"] is False
    assert "password=***" in result["server"]["dsn"]
    no_secret_anywhere(run, out)
    assert "warning" not in stderr
    assert not run.leftovers()


def test_password_dsn_on_our_command_line(pg, probe_tmp, tmp_path):
    # The user's choice: our own argv has it until geventprobe rewrites its title (and we
    # warn; tests/test_proctitle.py checks the rewrite), nothing we start does.
    run = CliProcess(["run", *SMALL, "--builds", "binary", "--dsn", pg.dsn], probe_tmp, tmp_path)
    try:
        workers = watch_argv(run, allowed=" ".join(run.proc.args).encode() + b" ")
        code, stdout, stderr = run.finish()
    finally:
        run.kill_all()
    assert code == 0, stdout + stderr
    assert workers
    assert "the password in --dsn was visible to every user" in stderr
    assert "GEVENTPROBE_DSN" in stderr
    no_secret_anywhere(run)
    assert not run.leftovers()


LEAKY_APP = '''
"""A route whose error message quotes the database password in free text (no DSN syntax)."""
import os
from urllib.parse import unquote, urlsplit

PASSWORD = unquote(urlsplit(os.environ["DATABASE_URL"]).password or "")


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/login":
        raise RuntimeError(f"login refused: the database said no to {PASSWORD} today")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello\\n"]
'''


def test_a_route_that_quotes_the_password_in_free_text(run_cli, pg, tmp_path):
    # issue 19 row 23: redaction masked DSN patterns, not the password the run knows.
    project = tmp_path / "leaky"
    project.mkdir()
    (project / "app.py").write_text(LEAKY_APP)
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    proc = run_cli("run", "--profile", "quick", "--workers", "1", "--app", "app:application",
                   "--chdir", str(project), "--route", "/login", "--json", str(out),
                   "--markdown", str(md), env={"GEVENTPROBE_DSN": pg.dsn})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    (route,) = result["builds"][0]["routes"]
    assert route["verdict"] == "FAILING"
    # The app's own words are kept, the password is not.
    assert "login refused: the database said no to *** today" in route["first_error"]
    for name, text in (("terminal", proc.stdout + proc.stderr), ("JSON", out.read_text()),
                       ("Markdown", md.read_text())):
        assert PASSWORD not in text, f"the password is in the {name} output"
