"""Every bad input gets one line that names the problem and the fix, exit 2, no traceback.

The CLI runs for real; servers are real (an embedded PostgreSQL with a password
and a small max_connections, a socket that never answers, one that answers but
is not PostgreSQL). Missing programs and packages are hidden the way a user's
machine would lack them: an empty GEVENTPROBE_PG_BINDIR, a PYTHONPATH entry
whose ``gevent``/``gunicorn`` cannot be imported.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from geventprobe.errors import ProbeError
from geventprobe.processes.postgres import EmbeddedPostgres, free_port

PASSWORD = "gp-" + secrets.token_hex(8)
SMALL = ["--workers", "2", "--greenlets", "8"]
DATA = Path(__file__).parent / "data"


def error_line(proc) -> str:
    """The one ``geventprobe: error:`` line; fails unless there is exactly one and no traceback."""
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("geventprobe: error:")]
    assert len(errors) == 1, proc.stderr
    # Progress lines may come before it; nothing but the error comes after.
    assert proc.stderr.strip().splitlines()[-1] == errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def pg():
    """A real server that wants a password over TCP and has room for 10 connections."""
    with EmbeddedPostgres(max_connections=10, password=PASSWORD) as server:
        yield server


@pytest.fixture(scope="module")
def silent_port():
    """A TCP port that accepts connections and never says a word (a host that hangs)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


@pytest.fixture(scope="module")
def http_port():
    """A port held by another program, which answers, but not as PostgreSQL."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = s.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.recv(1024)
                conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield s.getsockname()[1]
    stop.set()
    # close() alone does not wake a thread blocked in accept(): the join waited its 5 s.
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)
    s.close()
    thread.join(5)


@pytest.fixture
def shim(tmp_path):
    """A PYTHONPATH dir in which the named modules cannot be imported (as if not installed)."""

    def make(*modules: str) -> dict:
        for name in modules:
            (tmp_path / f"{name}.py").write_text(
                f"raise ModuleNotFoundError(\"No module named '{name}'\", name={name!r})\n")
        return {"PYTHONPATH": str(tmp_path)}

    return make


def dsn_of(pg, **changes) -> str:
    params = dict(p.split("=", 1) for p in pg.dsn.split())
    params.update(changes)
    return " ".join(f"{k}={v}" for k, v in params.items())


# --- no server needed -------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["--workers", "0"], "Invalid value for '--workers': 0 is not in the range"),
    (["--workers", "many"], "Invalid value for '--workers': 'many' is not a valid integer"),
    (["--greenlets", "1"], "Invalid value for '--greenlets': 1 is not in the range"),
    (["--time-limit", "0"], "Invalid value for '--time-limit'"),
    (["--wrokers", "2"], "No such option"),
    (["--builds", "binary,nope"], "unknown build nope in --builds: choose from binary"),
    (["--builds", ","], "unknown build"),
    (["--workers", "8", "--greenlets", "16"],
     "connections at once (8 workers × "),
    (["--config", "no-such-profile.toml"], "no-such-profile.toml"),
    (["--profile", "no-such-profile"], "unknown profile 'no-such-profile'"),
], ids=["workers-0", "workers-text", "greenlets-1", "time-limit-0", "unknown-option",
        "unknown-build", "empty-builds", "connection-cap", "missing-profile-file",
        "unknown-profile"])
def test_bad_options(run_cli, args, message):
    line = error_line(run_cli("run", *args))
    assert message in line
    if "8 workers" in message:
        assert "more than the 100" in line and "--allow-many-connections" in line
    if "Invalid value" in message or "No such option" in message:
        assert line.endswith("run --help)")


def test_connection_cap_can_be_confirmed(run_cli, silent_port):
    # Confirmed, the run goes on to the server (which then does not answer: a quick failure).
    proc = run_cli("run", "--workers", "8", "--greenlets", "16", "--allow-many-connections",
                   "--builds", "binary", "--config", os.devnull,
                   env={"GEVENTPROBE_DSN": f"host=127.0.0.1 port={free_port()}"})
    line = error_line(proc)
    assert "connection refused" in line and "--allow-many-connections" not in line


@pytest.mark.parametrize(("dsn", "message"), [
    ("host=db password s3cr3t", 'malformed DSN (missing "=" after "password"'),
    ("host=db passwrd=s3cr3t", 'malformed DSN (invalid connection option "passwrd")'),
    ("postgresql://me:s3cr3t@db:notaport/app", 'malformed DSN (port "notaport" is not a number)'),
], ids=["no-equals", "unknown-key", "bad-port"])
def test_malformed_dsn(run_cli, dsn, message):
    proc = run_cli("run", "--builds", "binary", env={"GEVENTPROBE_DSN": dsn})
    line = error_line(proc)
    assert message in line and "key=value" in line
    assert "s3cr3t" not in proc.stdout + proc.stderr


def test_refused_port(run_cli):
    proc = run_cli("run", "--builds", "binary",
                   env={"GEVENTPROBE_DSN": f"host=127.0.0.1 port={free_port()} password=s3cr3t"})
    line = error_line(proc)
    assert "connection refused (nothing listens there)" in line and "check the port" in line
    assert "s3cr3t" not in proc.stdout + proc.stderr


def test_unreachable_host_is_bounded_by_the_connect_timeout(run_cli, silent_port, tmp_path):
    # The server never answers (a host that accepts nothing or a black hole looks the same
    # to libpq): the connect timeout of the profile bounds the wait.
    profile = tmp_path / "p.toml"
    profile.write_text("[workload]\nconnect_timeout_s = 2\n")
    proc = run_cli("run", "--builds", "binary", "--config", str(profile),
                   env={"GEVENTPROBE_DSN": f"host=127.0.0.1 port={silent_port}"})
    line = error_line(proc)
    assert f"127.0.0.1:{silent_port}: no answer within 2 s (connect_timeout)" in line


def test_port_held_by_something_else(run_cli, http_port):
    proc = run_cli("run", "--builds", "binary",
                   env={"GEVENTPROBE_DSN": f"host=127.0.0.1 port={http_port}"})
    line = error_line(proc)
    assert "something answers there but it is not PostgreSQL" in line
    assert "another program holds it" in line


def test_embedded_server_port_taken_every_time(monkeypatch, tmp_path):
    # The embedded server picks a free port; another program can take it before the server
    # binds. It retries, and if that keeps happening says so in one line.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        monkeypatch.setattr("geventprobe.processes.postgres.free_port", lambda: port)
        with pytest.raises(ProbeError) as info, EmbeddedPostgres(max_connections=5):
            pass
    assert info.value.exit_code == 2
    message = str(info.value)
    assert "could not listen on 127.0.0.1" in message and "taken by other programs" in message
    assert "\n" not in message


def test_gevent_not_installed(run_cli, shim):
    line = error_line(run_cli("run", "--builds", "binary", env=shim("gevent")))
    assert "gevent is not installed" in line and "pip install gevent" in line


def test_gunicorn_not_installed(run_cli, shim):
    line = error_line(run_cli("run", "--builds", "binary", env=shim("gunicorn")))
    assert "gunicorn is not installed" in line and "pip install gunicorn" in line


def test_no_postgresql_binaries(run_cli, tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    line = error_line(run_cli("run", "--builds", "binary",
                              env={"GEVENTPROBE_PG_BINDIR": str(empty)}))
    assert "no PostgreSQL server programs (initdb, postgres)" in line and "--dsn" in line


def test_temp_dir_is_not_a_directory(run_cli, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    line = error_line(run_cli("run", "--builds", "binary", env={"TMPDIR": str(not_a_dir)}))
    assert f"TMPDIR={not_a_dir} is not a directory" in line


def test_temp_dir_not_writable(run_cli, tmp_path):
    if os.geteuid() == 0:
        target = "/proc"  # root may write anywhere a mode allows it to; not in /proc
    else:
        target = str(tmp_path / "ro")
        os.mkdir(target, 0o500)
    line = error_line(run_cli("run", "--builds", "binary", env={"TMPDIR": target}))
    assert f"cannot create a directory in the temp dir {target}" in line
    assert "set TMPDIR to a writable directory" in line


def test_debug_shows_the_traceback(run_cli):
    proc = run_cli("run", "--builds", "binary", "--debug",
                   env={"GEVENTPROBE_DSN": "host=db password s3cr3t"})
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and "malformed DSN" in proc.stderr


@pytest.mark.parametrize("dsn", [
    "postgresql://u:S3cretPw@[::1:5432/postgres",
    "host=127.0.0.1 port=1 user=u password=S3cretPw",
], ids=["malformed-uri", "refused"])
def test_debug_traceback_never_shows_the_password(run_cli, dsn):
    # The chained driver exception quotes the DSN: the traceback is redacted as a whole.
    proc = run_cli("run", "--builds", "binary", "--debug", env={"GEVENTPROBE_DSN": dsn})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" in proc.stderr
    assert "S3cretPw" not in proc.stdout + proc.stderr


# --- silent acceptance: an empty value, an option nothing reads ---------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (["--builds", ""], "--builds is empty: name at least one build"),
    (["--dsn", ""], "the DSN is empty"),
    (["--gunicorn-config", "gunicorn.conf.py"], "--gunicorn-config and --chdir go with --app"),
    (["--gunicorn-config", "gunicorn.conf.py", "--builds", "binary"],
     "--gunicorn-config and --chdir go with --app"),
    (["--chdir", ".", "--builds", "binary"], "--gunicorn-config and --chdir go with --app"),
    # Issue 25, debatable, decided: as --builds "" is (this ran with the default --fail-on).
    (["--fail-on", ""], "--fail-on is empty: name the verdicts that fail the run"),
], ids=["empty-builds", "empty-dsn", "config-without-app", "config-with-builds",
        "chdir-with-builds", "empty-fail-on"])
def test_empty_or_unread_options_are_refused(run_cli, args, message):
    assert message in error_line(run_cli("run", *args))


@pytest.mark.parametrize(("dsn", "message"), [
    ("mysql://me:s3cr3t@db/app", "mysql:// is not a PostgreSQL URL"),
    ("postgresql+psycopg://me:s3cr3t@db/app", "SQLAlchemy's driver suffix: drop it"),
], ids=["mysql", "sqlalchemy"])
def test_a_url_that_is_not_postgresql(run_cli, dsn, message):
    proc = run_cli("run", "--builds", "binary", env={"GEVENTPROBE_DSN": dsn})
    assert message in error_line(proc)
    assert "s3cr3t" not in proc.stdout + proc.stderr


def test_bisect_empty_build_is_refused(run_cli):
    line = error_line(run_cli("bisect", "--good", "3.1.4", "--bad", "3.2.0", "--build", ""))
    assert "--build is empty" in line


def test_the_dsns_own_connect_timeout_bounds_the_wait(run_cli, silent_port):
    # connect_timeout=2 in the DSN wins over the profile's 10 s, and the message says 2 s.
    proc = run_cli("run", "--builds", "binary", env={
        "GEVENTPROBE_DSN": f"host=127.0.0.1 port={silent_port} connect_timeout=2"})
    line = error_line(proc)
    assert "no answer within 2 s (connect_timeout)" in line


# Not earlier than 0.15 s: a Ctrl-C in the interpreter's own start-up, before the first line
# of geventprobe runs (~50 ms here, longer on a loaded machine), is Python's own
# KeyboardInterrupt (docs/bad-input.md).
@pytest.mark.parametrize("delay", [0.15, 0.3])
def test_ctrl_c_while_starting_is_one_line(probe_tmp, silent_port, delay):
    # Before the command's own signal handling exists (imports take a few hundred ms), or
    # while it waits for the server's first answer. Not a port that refuses: the whole run
    # then ended in 0.35 s once geventprobe's modules were compiled, and a Ctrl-C at 0.3 s
    # came as the interpreter was exiting after the error line (killed by SIGINT, -2).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "GEVENTPROBE"))}
    env.update(TMPDIR=probe_tmp, GEVENTPROBE_DSN=f"host=127.0.0.1 port={silent_port}")
    # As from a terminal: a test runner started in the background ignores SIGINT, and its
    # children would inherit that.
    proc = subprocess.Popen([sys.executable, "-m", "geventprobe", "run", "--builds", "binary"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err
    assert err.strip().splitlines()[-1].startswith("geventprobe: error: interrupted (Ctrl-C)")


# --- no package index ----------------------------------------------------------------------------

@pytest.mark.parametrize("retries", ["0", "1"])
def test_bisect_without_the_package_index_says_so(run_cli, retries):
    # Nothing listens on port 9. pip lists what its other configured indexes (if any) have,
    # so the release looks missing: the line must name the index, not the version.
    proc = run_cli("bisect", "--good", "3.1.4", "--bad", "3.2.0",
                   env={"PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": retries})
    line = error_line(proc)
    assert "http://127.0.0.1:9" in line or "127.0.0.1:9" in line, line
    assert "could not be reached (Connection refused)" in line
    assert "is not a release" not in line and "nearest" not in line


PIP_RETRYING = ("WARNING: Retrying (Retry(total=4, connect=None, read=None, redirect=None, "
                "status=None)) after connection broken by 'NewConnectionError('<pip._vendor."
                "urllib3.connection.HTTPSConnection object at 0x7f>: Failed to establish a new "
                "connection: [Errno 101] Network is unreachable')': /simple/psycopg/")


def test_an_install_that_could_not_reach_the_index_says_so():
    from geventprobe.versions import venvs

    output = (PIP_RETRYING + "\nERROR: Could not find a version that satisfies the requirement "
              "psycopg==3.1.4 (from versions: 3.3.6)\nERROR: No matching distribution found "
              "for psycopg==3.1.4\n")
    reason = venvs.installer_reason(output, "pip", ("psycopg==3.1.4",))
    assert reason.startswith("the package index could not be reached (Network is unreachable)")
    assert "no such release" not in reason
    assert venvs.index_unreachable("ERROR: No matching distribution found for x==1\n") is None


# --- files that are not what they should be ----------------------------------------------------

def test_config_file_that_is_not_utf8(run_cli, tmp_path):
    bad = tmp_path / "latin.toml"
    bad.write_bytes(b"\xff\xfe[workload]\n")
    line = error_line(run_cli("run", "--builds", "binary", "--config", str(bad)))
    assert f"--config {bad} is not UTF-8" in line


@pytest.mark.parametrize(("text", "message"), [
    ('dsn = "postgresql://u@db/app"\n', "a profile does not take a dsn: pass it in the "
     "GEVENTPROBE_DSN environment variable"),
    ("workers = 2\n", "workers = is outside any section: put it under [workload]"),
], ids=["dsn", "top-level-key"])
def test_config_keys_outside_a_section(run_cli, tmp_path, text, message):
    path = tmp_path / "p.toml"
    path.write_text(text)
    line = error_line(run_cli("run", "--builds", "binary", "--config", str(path)))
    assert message in line and "unknown section" not in line


def test_bisect_same_release_at_both_ends(run_cli):
    line = error_line(run_cli("bisect", "--good", "3.2.0", "--bad", "3.2.0"))
    assert "--good and --bad are the same release 3.2.0" in line and "swap" not in line


@pytest.mark.parametrize("command", ["report", "compare"])
def test_result_with_a_field_of_the_wrong_type(run_cli, tmp_path, command):
    data = json.loads((DATA / "run-default.json").read_text())
    data["builds"][0]["metrics"]["wait_factor"] = "fast"
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(data))
    args = [str(edited)] if command == "report" else [str(DATA / "run-default.json"), str(edited)]
    line = error_line(run_cli(command, *args))
    assert str(edited) in line
    assert "result.builds[0].metrics.wait_factor must be a number" in line


# --- a real server that says no ----------------------------------------------------------------

def test_wrong_password(run_cli, pg):
    proc = run_cli("run", "--builds", "binary",
                   env={"GEVENTPROBE_DSN": dsn_of(pg, password="not-" + PASSWORD)})
    line = error_line(proc)
    assert "wrong password for user geventprobe" in line and "GEVENTPROBE_DSN" in line
    assert PASSWORD not in proc.stdout + proc.stderr


def test_missing_database(run_cli, pg):
    proc = run_cli("run", "--builds", "binary", env={"GEVENTPROBE_DSN": dsn_of(pg, dbname="nope")})
    line = error_line(proc)
    assert 'database "nope" does not exist' in line and "dbname=postgres" in line
    assert PASSWORD not in proc.stdout + proc.stderr


def test_not_enough_free_connections(run_cli, pg):
    # 2 workers × 8 greenlets = 16 connections (and more for the HTTP route); room for 10.
    proc = run_cli("run", *SMALL, "--builds", "binary", env={"GEVENTPROBE_DSN": pg.dsn})
    line = error_line(proc)
    assert "free connections (max_connections 10" in line
    assert re.search(r"the run needs (\d+) at once", line)
    assert int(re.search(r"the run needs (\d+) at once", line).group(1)) >= 16
    assert "lower --workers or --greenlets" in line


def test_server_refuses_more_connections(run_cli, pg):
    held = []
    try:
        with contextlib.suppress(psycopg.OperationalError):
            while len(held) < 20:  # fill every slot, superuser ones included
                held.append(psycopg.connect(pg.dsn))
        proc = run_cli("run", "--workers", "1", "--greenlets", "2", "--builds", "binary",
                       env={"GEVENTPROBE_DSN": pg.dsn})
    finally:
        for conn in held:
            conn.close()
    line = error_line(proc)
    assert "the server refuses more connections" in line and "too many clients" in line
    assert re.search(r"the run needs \d+ at once", line)
    assert PASSWORD not in proc.stdout + proc.stderr


# --- --rtt in front of a server of the user's (issue 19 rows 20, 21, 24) ---------------------

def test_rtt_with_a_pgpass_entry_for_the_servers_port(run_cli, pg, tmp_path):
    # Row 20: the password is in a password file whose entry names the server's port; the
    # workers connect to the proxy's port, which no entry matched ("no password supplied").
    # The password libpq found for the server is handed on, and masked like any other.
    pgpass = tmp_path / "pgpass"  # PGPASSFILE: no ~/.pgpass is written, none left behind
    pgpass.write_text(f"127.0.0.1:{pg.port}:*:geventprobe:{PASSWORD}\n")
    pgpass.chmod(0o600)
    out = tmp_path / "r.json"
    proc = run_cli("run", "--workers", "1", "--greenlets", "2", "--builds", "binary",
                   "--rtt", "5", "--json", str(out),
                   env={"GEVENTPROBE_DSN": dsn_of(pg).replace(f" password={PASSWORD}", ""),
                        "PGPASSFILE": str(pgpass)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert [(b["build"], b["verdict"]) for b in result["builds"]] == [("binary", "OK")]
    assert result["proxy"]["connections"] >= 2
    assert PASSWORD not in proc.stdout + proc.stderr + out.read_text()


def test_rtt_longer_than_the_dsns_connect_timeout_is_said_up_front(run_cli, pg):
    # Row 21: a connect through the proxy costs several round trips, more than 2 s at 999 ms;
    # the workers failed "ConnectionTimeout", fix "--debug". One line naming both settings.
    proc = run_cli("run", "--workers", "1", "--greenlets", "2", "--builds", "binary",
                   "--rtt", "999", env={"GEVENTPROBE_DSN": dsn_of(pg, connect_timeout="2")})
    line = error_line(proc)
    assert "cannot connect through the --rtt delay proxy" in line
    assert "no answer within 2 s (connect_timeout)" in line and "at --rtt 999" in line
    assert "raise connect_timeout" in line and "lower --rtt" in line
    assert PASSWORD not in proc.stdout + proc.stderr


def test_a_dsn_without_host_names_the_unix_socket(run_cli):
    # Row 24: with no host libpq tries its default unix socket; the message said
    # "localhost:PORT", a place nothing was tried at.
    port = free_port()
    proc = run_cli("run", "--builds", "binary", "--rtt", "5",
                   env={"GEVENTPROBE_DSN": f"port={port} user=nobody dbname=postgres"})
    line = error_line(proc)
    assert f"cannot connect to PostgreSQL at the default unix socket (port {port}" in line
    assert "localhost" not in line


# --- a celery run (run --celery): refused before anything is started ----------------------

CELERY_EXAMPLE = str(Path(__file__).parent.parent / "examples" / "celery" / "psycopg3_cli")


@pytest.mark.parametrize(("args", "message"), [
    (["--celery", "tasks", "--app", "app:application"],
     "--celery probes a celery worker and --app a gunicorn app"),
    (["--celery", "tasks", "--task", "tasks.query", "--task-args", "[1,"],
     "--task-args '[1,' is not JSON"),
    (["--task", "tasks.query"], "--task goes with a celery worker: add --celery APP"),
    (["--celery", "tasks", "--broker", "http://example.invalid/"],
     "http:// is not a broker geventprobe speaks to"),
    # Issue 25 row 1: an unset $VAR in CI; this ran the five builds and said exit 0.
    (["--celery-cmd", ""], "--celery-cmd is empty: give the command that starts your worker"),
    (["--celery", ""], "--celery '': give the app as celery's -A takes it"),
    # Issue 25 row 10: this left a detached worker running after the run.
    (["--celery-cmd", f"{sys.executable} -m celery -A tasks worker -P gevent --detach"],
     "--celery-cmd: --detach forks the worker into the background"),
], ids=["with-app", "args-not-json", "task-without-celery", "broker-scheme", "command-empty",
        "app-empty", "detach"])
def test_celery_options_refused(run_cli, args, message):
    assert message in error_line(run_cli("run", "--chdir", CELERY_EXAMPLE, *args))


def test_a_broker_that_refuses_is_one_line_without_its_password(run_cli):
    url = f"redis://:s3cr3t-broker@127.0.0.1:{free_port()}/0"
    t0 = time.monotonic()
    proc = run_cli("run", "--celery", "tasks", "--chdir", CELERY_EXAMPLE,
                   env={"GEVENTPROBE_BROKER": url})
    line = error_line(proc)
    assert "is unreachable" in line and "Connection refused" in line
    assert "leave --broker out" in line
    assert "s3cr3t-broker" not in proc.stdout + proc.stderr
    assert time.monotonic() - t0 < 15


def test_a_silent_broker_is_one_line_in_bounded_time(run_cli, silent_port):
    t0 = time.monotonic()
    proc = run_cli("run", "--celery", "tasks", "--chdir", CELERY_EXAMPLE, "--broker",
                   f"redis://127.0.0.1:{silent_port}/0")
    line = error_line(proc)
    assert "did not answer within 5 s" in line or "is unreachable" in line
    assert time.monotonic() - t0 < 15  # the check's 5 s, +1, and our own start


def test_redis_server_not_installed_names_the_install_command(run_cli):
    # No redis-server on PATH (geventprobe itself runs by its absolute interpreter path).
    proc = run_cli("run", "--celery", "tasks", "--chdir", CELERY_EXAMPLE,
                   env={"PATH": "/nonexistent"})
    line = error_line(proc)
    assert "redis-server is not installed" in line
    assert "apt-get install redis-server" in line and "--broker URL" in line


# Found once the worker runs: it is started, then stopped and removed before the line.

@pytest.mark.integration
def test_a_celery_app_that_does_not_import_is_one_line(run_cli):
    line = error_line(run_cli("run", "--celery", "no_such_module", "--chdir", CELERY_EXAMPLE,
                              timeout=120))
    assert line.startswith("geventprobe: error: the celery worker exited with code")
    assert "no_such_module" in line and "starts it by hand" in line


@pytest.mark.integration
def test_an_unknown_task_is_one_line_naming_the_known_ones(run_cli):
    line = error_line(run_cli("run", "--celery", "tasks", "--chdir", CELERY_EXAMPLE,
                              "--task", "tasks.nope", timeout=120))
    assert line.startswith("geventprobe: error: --task tasks.nope: the worker's app has no")
    assert "tasks.query" in line and "geventprobe.pg_sleep" not in line


# Issue 25 rows 2 to 4: what is not a celery gevent worker, or not one yet, is one line (exit
# 2), never a verdict: a prefork worker was "OK ... under -P gevent", a program that is not
# celery and an app still importing were BLOCKING at a frame of gevent's own hub.

@pytest.mark.integration
def test_a_worker_of_another_pool_is_one_line_with_the_gevent_command(run_cli):
    command = f"{sys.executable} -m celery -A tasks worker -P prefork -c 1"
    line = error_line(run_cli("run", "--celery-cmd", command, "--chdir",
                              str(Path(CELERY_EXAMPLE).parent / "psycopg2_plain"), timeout=120))
    assert "runs celery's prefork pool (-P prefork), not gevent's" in line
    assert "gevent patched nothing in it" in line
    assert "-m celery -A tasks worker -P gevent -c 1" in line


@pytest.fixture
def short_boot(tmp_path) -> str:
    """A profile that gives a worker 2 s to get ready."""
    path = tmp_path / "boot.toml"
    path.write_text("[workload]\nboot_timeout_s = 2\n")
    return str(path)


@pytest.mark.integration
def test_a_program_that_is_not_celery_is_one_line(run_cli, short_boot):
    command = f"{sys.executable} -c 'import time; time.sleep(30)'"
    line = error_line(run_cli("run", "--celery-cmd", command, "--chdir", CELERY_EXAMPLE,
                              "--config", short_boot, timeout=120))
    assert "never imported celery in the 2 s a worker has to get ready" in line
    assert "it is not a celery worker" in line and "raise boot_timeout_s (now 2 s)" in line


@pytest.mark.integration
def test_an_app_still_importing_is_one_line_naming_the_boot_timeout(run_cli, short_boot):
    app = str(Path(__file__).parent / "apps" / "celery_slow_import")
    line = error_line(run_cli("run", "--celery", "tasks", "--chdir", app, "--config",
                              short_boot, timeout=120))
    assert "your celery app was still importing" in line
    assert "raise boot_timeout_s (now 2 s)" in line and "gevent/hub.py" not in line



def test_the_time_limit_of_a_celery_run_never_suggests_builds(run_cli):
    """Debatable in issue 25, decided: the hint said `--builds`, which a celery run refuses."""
    line = error_line(run_cli("run", "--celery", "tasks", "--chdir", CELERY_EXAMPLE,
                              "--time-limit", "1", timeout=120))
    assert "took longer than --time-limit 1 s" in line
    assert "fewer tasks at once (--greenlets)" in line and "probe fewer builds" not in line
