"""The harness against real servers: plain gunicorn and celery gevent workers, a real
PostgreSQL and redis-server, the harness run as a program (no geventprobe in it).

The default tier covers every class once, on six examples (~30 s): ``psycopg2_plain``
BLOCKING, ``shared_connection`` SERIALIZED, ``clean`` OK and ``pool_timeout`` FAILING under
gunicorn; ``celery/spinning_wait`` BUSY-WAIT and ``celery/psycopg2_plain`` BLOCKING. Each
must show the class its manifest expects, so changing an ``expect`` fails here. Every
other example, and geventprobe beside the harness, is the slow tier
(tests/test_harness_agreement.py). Then what it leaves: nothing running, no temp file,
after a run, a Ctrl-C and a server that does not start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import pytest
from conftest import temp_parent
from manifests import EXAMPLES, HARNESS, case

from geventprobe.processes.postgres import SUPERUSER, EmbeddedPostgres

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dsn():
    with EmbeddedPostgres(max_connections=100) as pg:
        yield f"postgresql://{SUPERUSER}@127.0.0.1:{pg.port}/postgres"


def _left(tmp: str) -> list[psutil.Process]:
    """Live processes that work in ``tmp`` or got it as their TMPDIR."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.cwd().startswith(tmp) or proc.environ().get("TMPDIR") == tmp:
                found.append(proc)
        except psutil.Error:
            continue
    return found


class Harness:
    """``python harness/harness.py ARGS`` in a TMPDIR of its own, its figures as JSON."""

    def __init__(self, *args: str, dsn: str | None = None):
        self.tmp = tempfile.mkdtemp(prefix="gp-test-harness-", dir=temp_parent())
        os.chmod(self.tmp, 0o755)  # as root, PostgreSQL runs as another user
        self.out = os.path.join(tempfile.mkdtemp(prefix="gp-test-harness-out-"), "f.json")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PG", "GEVENTPROBE", "DATABASE_URL", "CELERY"))}
        env["TMPDIR"] = self.tmp
        if dsn:
            env["DATABASE_URL"] = dsn
        # As from a terminal: a test runner started in the background ignores SIGINT, and
        # its children would inherit that (the Ctrl-C test then saw exit 1, not 130).
        self.proc = subprocess.Popen([sys.executable, str(HARNESS), *args, "--json", self.out],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, preexec_fn=lambda: signal.signal(
                                         signal.SIGINT, signal.SIG_DFL))

    def wait(self, timeout: float = 180) -> Harness:
        self.stdout, self.stderr = self.proc.communicate(timeout=timeout)
        return self

    @property
    def figures(self) -> dict:
        with open(self.out) as f:
            return json.load(f)

    def assert_nothing_left(self) -> None:
        left, files = _left(self.tmp), os.listdir(self.tmp)
        for proc in left:
            proc.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)
        shutil.rmtree(os.path.dirname(self.out), ignore_errors=True)
        assert not files, f"temp files left behind: {files}"
        assert not left, f"processes left running: {[p.cmdline() for p in left]}"


DEFAULT_TIER = ["psycopg2_plain", "shared_connection", "clean", "pool_timeout",
                "celery/spinning_wait"]


@pytest.mark.parametrize("example", DEFAULT_TIER)
def test_the_harness_shows_the_expected_class(example, dsn):
    run = Harness(str(EXAMPLES / example), dsn=dsn).wait()
    try:
        expected = case(example)["expect"]
        assert run.figures["shows"] == expected, run.stdout + run.stderr
        assert run.proc.returncode == (0 if expected == "OK" else 1)
        assert f"expected {expected} (" in run.stdout and ": agrees" in run.stdout
    finally:
        run.assert_nothing_left()


def test_a_blocked_celery_worker_with_its_own_postgres_and_broker():
    """The harness starts PostgreSQL and redis-server itself; the queue, not celery's
    runtime, shows the wait; everything it started is gone after."""
    run = Harness(str(EXAMPLES / "celery" / "psycopg2_plain")).wait()
    try:
        f = run.figures
        assert f["shows"] == case("celery/psycopg2_plain")["expect"] == "BLOCKING", run.stdout
        assert f["celery"]["queue_max_s"] > 5 * f["celery"]["runtime_max_s"]
        assert "a throwaway PostgreSQL" in run.stderr and "a throwaway redis-server" in run.stderr
    finally:
        run.assert_nothing_left()


def test_ctrl_c_stops_everything():
    run = Harness(str(EXAMPLES / "psycopg2_plain"))
    try:
        deadline = time.monotonic() + 60
        seen = ""
        while "16 at once" not in seen and time.monotonic() < deadline:
            seen += run.proc.stderr.readline()
        assert "16 at once" in seen, seen
        run.proc.send_signal(signal.SIGINT)
        run.wait(30)
        assert run.proc.returncode == 130, run.stderr
        assert "interrupted" in run.stderr
    finally:
        run.assert_nothing_left()


def test_a_server_that_does_not_start_is_one_clear_line():
    run = Harness(str(EXAMPLES / "clean"), "python -c 'raise SystemExit(3)' {port}",
                  "--request", "GET /query", dsn="postgresql://nobody@127.0.0.1:1/none").wait()
    try:
        assert run.proc.returncode == 2
        assert "harness: the server exited (3); its log ends:" in run.stderr
        assert "Traceback" not in run.stderr
    finally:
        run.assert_nothing_left()
