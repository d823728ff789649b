"""Faults at every phase of a real run: nothing may be left behind, the exit code must say why.

Each test starts the real CLI (embedded PostgreSQL, real gunicorn gevent workers),
waits for the files the run itself creates to know which phase it is in
(``geventprobe-pg-*/initdb.log`` while the server is being made, ``gunicorn.log``
before any worker is ready, ``go`` while the workers probe), then signals or kills
something. Every process the run started is recorded by pid (and start time, so a
reused pid is not mistaken for it) while it runs; afterwards none may be alive, and
the ``probe_tmp`` fixture checks that TMPDIR ended empty.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.integration

SMALL = ["--workers", "2", "--greenlets", "8"]
# A SELECT 1 loop long enough that "during the probe" is a wide window.
LONG_PROBE = "[workload]\nselect1_seconds = 8.0\n"
# ...for a run that must then finish: the probe is still on 2 s after go (a worker stopped
# 0.5 s in, for 1.5 s), or long enough to be caught at all (a second and a half).
PROBE_2S = "[workload]\nselect1_seconds = 2.0\n"
PROBE_1S = "[workload]\nselect1_seconds = 1.0\n"


class CliProcess:
    """``python -m geventprobe ARGS`` started for real, watched from outside while it runs."""

    def __init__(self, args: list[str], tmpdir: str, out_dir: Path, env: dict | None = None):
        self.tmpdir = tmpdir
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "GEVENTPROBE"))}
        full_env["TMPDIR"] = tmpdir
        full_env.update(env or {})
        # Files, not pipes: nobody reads a pipe while the test polls, and a full pipe hangs.
        self.stdout_path, self.stderr_path = out_dir / "stdout", out_dir / "stderr"
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "geventprobe", *args],
                                         env=full_env, stdout=out, stderr=err)
        self.seen: dict[int, float] = {}

    def watch(self) -> list[psutil.Process]:
        """Record every live descendant (gunicorn, workers, postgres, backends, initdb)."""
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for child in children:
            try:
                self.seen.setdefault(child.pid, child.create_time())
            except psutil.NoSuchProcess:
                continue
        return children

    def wait_until(self, condition, what: str, timeout: float = 90.0):
        """Poll ``condition()`` (recording processes meanwhile) until it returns something."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.watch()
            value = condition()
            if value:
                return value
            if self.proc.poll() is not None:
                pytest.fail(f"the run ended before {what}: exit {self.proc.returncode}\n"
                            f"{self.output()}")
            time.sleep(0.01)
        self.proc.kill()
        pytest.fail(f"timed out waiting for {what}\n{self.output()}")

    def files(self, pattern: str) -> list[str]:
        """Paths under the run's TMPDIR matching ``pattern``."""
        return glob.glob(os.path.join(self.tmpdir, pattern))

    def finish(self, timeout: float = 120.0) -> tuple[int, str, str]:
        """Wait for the CLI to exit; its exit code, stdout and stderr."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            self.watch()
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"the run did not exit within {timeout:.0f} s\n{self.output()}")
            time.sleep(0.05)
        return self.proc.returncode, self.stdout_path.read_text(), self.stderr_path.read_text()

    def output(self) -> str:
        return self.stdout_path.read_text() + self.stderr_path.read_text()

    def leftovers(self) -> list[int]:
        """Processes the run started that are still running.

        A zombie has exited: what remains is an entry for its parent to reap. Once the CLI
        has exited, that parent is init, which may reap lazily (PID 1 of this test VM does),
        so a zombie is not a leftover; anything else with the same pid and start time is.
        """
        alive = []
        for pid, created in self.seen.items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                continue
        return alive

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill_all(self) -> None:
        """After a failed assertion: leave nothing for the next test."""
        for pid in [self.proc.pid, *self.seen]:
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                continue


@pytest.fixture
def cli(probe_tmp, tmp_path):
    """Start CliProcess runs in the probe_tmp TMPDIR; kills what is left if a test fails."""
    started: list[CliProcess] = []

    def start(*args: str, env: dict | None = None, profile: str | None = None,
              initdb: bool = False) -> CliProcess:
        """``initdb``: with an empty cache dir, so that the server is made by initdb (a
        moment long enough to catch), not copied from the cluster kept there."""
        if initdb:
            env = {**(env or {}), "GEVENTPROBE_CACHE_DIR": str(tmp_path / "cache")}
        extra = []
        if profile is not None:
            path = tmp_path / "profile.toml"
            path.write_text(profile)
            extra = ["--config", str(path)]
        out_dir = tmp_path / f"run{len(started)}"
        out_dir.mkdir()
        run = CliProcess(["run", *args, *extra], probe_tmp, out_dir, env)
        started.append(run)
        return run

    yield start
    for run in started:
        run.kill_all()


def assert_clean(run: CliProcess) -> None:
    assert run.seen, "the run started no process: the test did not watch it"
    left = []
    for pid in run.leftovers():
        try:
            left.append((pid, psutil.Process(pid).name()))
        except psutil.Error:
            continue
    assert not left, f"processes left running: {left}"


# --- the three moments of a run ------------------------------------------------------------

def during_server_start(run: CliProcess):
    # initdb is running: the server's temp dir exists and is being filled.
    return run.files("geventprobe-pg-*") and any(_name(p) == "initdb" for p in run.watch())


def _name(proc: psutil.Process) -> str | None:
    try:
        return proc.name()
    except psutil.Error:
        return None


def during_gunicorn_boot(run: CliProcess):
    # gunicorn started (its log exists) and no worker is ready yet.
    return (run.files("geventprobe-run-*/gunicorn.log")
            and not run.files("geventprobe-run-*/ready-*"))


def during_probe(run: CliProcess):
    # Every worker is ready and the parent said go; no result yet.
    return run.files("geventprobe-run-*/go") and not run.files("geventprobe-run-*/result-*")


MOMENTS = {"server-start": during_server_start, "gunicorn-boot": during_gunicorn_boot,
           "probe": during_probe}
SIGNALS = {"SIGINT": (signal.SIGINT, 130, "interrupted (Ctrl-C)"),
           "SIGTERM": (signal.SIGTERM, 2, "terminated by SIGTERM")}


@pytest.mark.parametrize("moment", list(MOMENTS))
@pytest.mark.parametrize("sig_name", list(SIGNALS))
def test_signal_at_every_phase_leaves_nothing(cli, moment, sig_name):
    sig, code, message = SIGNALS[sig_name]
    run = cli(*SMALL, "--builds", "binary", profile=LONG_PROBE, initdb=moment == "server-start")
    run.wait_until(lambda: MOMENTS[moment](run), moment)
    before = run.watch()
    assert before, "nothing was running at that moment"
    run.signal(sig)
    exit_code, stdout, stderr = run.finish()
    assert exit_code == code, stdout + stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("geventprobe: error:")]
    assert len(errors) == 1 and message in errors[0], stderr
    assert "stopped and removed" in errors[0]
    assert "Traceback" not in stdout + stderr
    assert_clean(run)


def test_worker_killed_mid_probe(cli):
    run = cli(*SMALL, "--builds", "binary", profile=LONG_PROBE)
    ready = run.wait_until(lambda: during_probe(run) and run.files("geventprobe-run-*/ready-*"),
                           "the probe")
    victim = int(os.path.basename(sorted(ready)[0])[len("ready-"):-len(".json")])
    os.kill(victim, signal.SIGKILL)
    exit_code, stdout, stderr = run.finish()
    assert exit_code == 2, stdout + stderr
    assert f"worker {victim} died mid-probe" in " ".join(stdout.split())
    assert "SIGKILL" in stdout
    assert "probe failed for binary" in stdout
    assert "Traceback" not in stdout + stderr
    assert_clean(run)


def test_gunicorn_master_killed_mid_probe(cli):
    run = cli(*SMALL, "--builds", "binary", profile=LONG_PROBE)
    ready = run.wait_until(lambda: during_probe(run) and run.files("geventprobe-run-*/ready-*"),
                           "the probe")
    worker = int(os.path.basename(ready[0])[len("ready-"):-len(".json")])
    master = psutil.Process(worker).ppid()
    os.kill(master, signal.SIGKILL)
    exit_code, stdout, stderr = run.finish()
    assert exit_code == 2, stdout + stderr
    assert f"the gunicorn master (pid {master}) was killed by SIGKILL" in " ".join(stdout.split())
    # No line of its log says why it died: none is quoted as if it did.
    assert "something outside sent the signal" in " ".join(stdout.split())
    assert "Control socket" not in stdout and "Listening at" not in stdout
    assert "Traceback" not in stdout + stderr
    # Its orphaned workers too: they were recorded while the run went on.
    assert worker in run.seen
    assert_clean(run)


def test_embedded_server_killed_mid_probe(cli):
    run = cli(*SMALL, "--builds", "binary,python", profile=LONG_PROBE)
    run.wait_until(lambda: during_probe(run), "the probe")
    pidfile = run.files("geventprobe-pg-*/data/postmaster.pid")[0]
    postmaster = int(Path(pidfile).read_text().split()[0])
    os.kill(postmaster, signal.SIGKILL)
    exit_code, stdout, stderr = run.finish()
    assert exit_code == 2, stdout + stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("geventprobe: error:")]
    assert len(errors) == 1, stderr
    assert f"the embedded PostgreSQL (pid {postmaster}) killed by SIGKILL mid-run" in errors[0]
    assert "Traceback" not in stdout + stderr
    assert_clean(run)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_embedded_server_asked_to_shut_down_is_named_at_once(cli, sig):
    # Issue 19 rows 16-18: a smart shutdown (SIGTERM) waits for every client to leave, so the
    # server's exit came only after the workers gave up (43 s); a fast one (SIGINT) raced the
    # workers' "server closed the connection". The shutdown request is in the server's log at
    # once: the run stops then, naming the embedded server.
    run = cli(*SMALL, "--builds", "binary,python", profile=LONG_PROBE)
    run.wait_until(lambda: during_probe(run), "the probe")
    pidfile = run.files("geventprobe-pg-*/data/postmaster.pid")[0]
    postmaster = int(Path(pidfile).read_text().split()[0])
    os.kill(postmaster, sig)
    signalled = time.monotonic()
    exit_code, stdout, stderr = run.finish()
    assert exit_code == 2, stdout + stderr
    assert time.monotonic() - signalled < 15  # not the workers' timeouts
    errors = [ln for ln in stderr.splitlines() if ln.startswith("geventprobe: error:")]
    assert len(errors) == 1, stderr
    mode = {signal.SIGTERM: "smart", signal.SIGINT: "fast"}[sig]
    assert (f"the embedded PostgreSQL (pid {postmaster}) was asked to shut down mid-run ({mode} "
            f"shutdown: {signal.Signals(sig).name} from outside geventprobe)") in errors[0]
    assert "Traceback" not in stdout + stderr
    assert_clean(run)


STATUSES = Path(__file__).parent / "apps" / "statuses"


def during_routes(run: CliProcess):
    # A worker handed over to the route phase: its record written whole (not the .tmp file
    # it is written to first, whose name would not parse as a pid).
    return run.files("geventprobe-run-*/route-ready-*.json")


def test_time_limit_bounds_a_slow_route(cli):
    # Issue 19 row 10: a route slower than the limit was awaited (lone request, then burst:
    # 65 s) before the limit was looked at again; the message then said "stopped at 12 s".
    # 7 s: the route phase begins about 2 s into this run (4 s on a loaded machine).
    started = time.monotonic()
    run = cli("--profile", "quick", "--app", "app:application", "--chdir", str(STATUSES),
              "--route", "/sleep", "--time-limit", "7", env={"SLEEP_S": "40"})
    run.wait_until(lambda: during_routes(run), "the route phase")
    exit_code, stdout, stderr = run.finish()
    assert exit_code == 2, stdout + stderr
    # The limit, then the cleanup (gunicorn's graceful stop is cut short): not the 40 s route.
    assert time.monotonic() - started < 25, stdout + stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("geventprobe: error:")]
    assert len(errors) == 1 and "longer than --time-limit 7 s" in errors[0], stderr
    assert "Traceback" not in stdout + stderr
    assert_clean(run)


def test_gunicorn_master_killed_in_the_route_phase(cli, tmp_path):
    # Issue 19 row 19: its workers went with it; the routes answered "refused", judged as the
    # app FAILING (exit 1). They were not measured: ERROR, exit 2, naming the kill.
    out = tmp_path / "r.json"
    run = cli("--profile", "quick", "--app", "app:application", "--chdir", str(STATUSES),
              "--route", "/cpu", "--route", "/ok", "--json", str(out))
    ready = run.wait_until(lambda: during_routes(run), "the route phase")
    worker = int(os.path.basename(ready[0])[len("route-ready-"):-len(".json")])
    master = psutil.Process(worker).ppid()
    time.sleep(0.2)
    os.kill(master, signal.SIGKILL)
    exit_code, stdout, stderr = run.finish()
    assert exit_code == 2, stdout + stderr
    routes = json.loads(out.read_text())["builds"][0]["routes"]
    assert [(r["route"], r["verdict"]) for r in routes] == [("GET /cpu", "ERROR"),
                                                            ("GET /ok", "ERROR")]
    for r in routes:
        assert f"the gunicorn master (pid {master}) was killed by SIGKILL" in r["cause"]
    text = " ".join(stdout.split())
    assert "FAILING" not in text and "preload_app" not in text
    assert "Traceback" not in stdout + stderr
    assert_clean(run)


def test_time_limit_stops_the_run_mid_probe(cli):
    # An error raised in the middle of a phase (here: the run's own time limit).
    run = cli(*SMALL, "--builds", "binary", "--time-limit", "4", profile=LONG_PROBE)
    exit_code, stdout, stderr = run.finish()
    assert exit_code == 2, stdout + stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("geventprobe: error:")]
    assert len(errors) == 1 and "longer than --time-limit 4 s" in errors[0], stderr
    assert "Traceback" not in stdout + stderr
    assert_clean(run)


def test_worker_timeout_is_blocking_evidence(cli, tmp_path):
    # A deployment's short gunicorn --timeout: the blocked psycopg2 baseline's hub stalls for
    # 8 × 1 s per window, so the master kills the worker. That is what BLOCKING looks like
    # to gunicorn, not a crash of the probe.
    out = tmp_path / "r.json"
    run = cli("--workers", "1", "--greenlets", "8", "--builds", "psycopg2", "--json", str(out),
              profile="[workload]\nworker_timeout_s = 3\nwait_seconds = 1.0\n")
    exit_code, stdout, stderr = run.finish()
    assert exit_code == 0, stdout + stderr  # the baseline got its known class
    build = json.loads(out.read_text())["builds"][0]
    assert build["verdict"] == "BLOCKING"
    assert build["error"] is None
    assert [e["rule"] for e in build["evidence"]] == ["worker-timeout"]
    assert build["worker_timeouts"] == 1
    assert "no wait callback" in build["cause"]
    assert "WORKER TIMEOUT" in stdout
    assert_clean(run)


# --- geventprobe itself killed: nothing can clean up inside it -----------------------------------

def _gone_within(run: CliProcess, seconds: float) -> tuple[list[int], list[str]]:
    """Wait up to ``seconds`` for every process the run started to go and TMPDIR to empty."""
    deadline = time.monotonic() + seconds
    while True:
        left, files = run.leftovers(), os.listdir(run.tmpdir)
        if (not left and not files) or time.monotonic() > deadline:
            return left, files
        time.sleep(0.05)


@pytest.mark.parametrize("moment", ["server-start", "probe"])
def test_sigkill_of_geventprobe_leaves_nothing(cli, moment):
    run = cli(*SMALL, "--builds", "binary", profile=LONG_PROBE, initdb=moment == "server-start")
    run.wait_until(lambda: MOMENTS[moment](run), moment)
    assert run.watch()
    run.signal(signal.SIGKILL)
    run.proc.wait()
    left, files = _gone_within(run, 5.0)
    assert not left, f"processes left running 5 s after kill -9: {left}"
    assert not files, f"temp files left 5 s after kill -9: {files}"


@pytest.fixture
def own_server():
    """A server this test started itself, so that its pg_stat_activity is only ours."""
    from geventprobe.processes.postgres import EmbeddedPostgres

    with EmbeddedPostgres(max_connections=40) as pg:
        yield pg.dsn


def _probe_connections(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity "
                            "WHERE application_name = 'geventprobe'").fetchone()[0]


def test_sigkill_of_geventprobe_closes_its_server_connections(cli, own_server):
    run = cli(*SMALL, "--builds", "binary", profile=LONG_PROBE,
              env={"GEVENTPROBE_DSN": own_server})
    # After go the workers connect in turn: wait until the server sees them (the test can see).
    run.wait_until(lambda: during_probe(run) and _probe_connections(own_server) > 0,
                   "the workers connected")
    run.signal(signal.SIGKILL)
    run.proc.wait()
    left, files = _gone_within(run, 5.0)
    assert not left and not files, (left, files)
    deadline = time.monotonic() + 5.0
    while (count := _probe_connections(own_server)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert count == 0, f"{count} server connections left 5 s after kill -9"


# --- a worker that does not run is no evidence about the driver ----------------------------------

@pytest.mark.parametrize("resume", [False, True], ids=["never-resumed", "resumed"])
def test_stopped_worker_is_an_error_not_blocking(cli, tmp_path, resume):
    # SIGSTOP one worker mid-probe. Never resumed, gunicorn kills it for WORKER TIMEOUT
    # (the short --timeout keeps the test short); resumed, its hub "lagged" for as long as it
    # was stopped. Either way the driver did nothing wrong.
    # The SELECT 1 loop's 2 s keep the probe going past the stop (0.5 s after ready) and
    # the resume (1.5 s later); gunicorn's 3 s timeout then kills the never-resumed one.
    out = tmp_path / "r.json"
    run = cli(*SMALL, "--builds", "binary", "--json", str(out),
              profile=PROBE_2S + "worker_timeout_s = 3\n")
    ready = run.wait_until(lambda: during_probe(run) and run.files("geventprobe-run-*/ready-*"),
                           "the probe")
    victim = int(os.path.basename(sorted(ready)[0])[len("ready-"):-len(".json")])
    time.sleep(0.5)
    os.kill(victim, signal.SIGSTOP)
    try:
        if resume:
            time.sleep(1.5)
            os.kill(victim, signal.SIGCONT)
        exit_code, stdout, stderr = run.finish()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGCONT)
    assert exit_code == 2, stdout + stderr
    build = json.loads(out.read_text())["builds"][0]
    assert build["verdict"] == "ERROR", build["cause"]
    assert f"worker {victim} did not run during the probe" in build["cause"]
    assert "stopped (process state T)" in build["cause"]
    assert "psycopg" not in build["cause"] + build["advice"]
    assert "Traceback" not in stdout + stderr
    assert_clean(run)


@pytest.mark.parametrize("where", ["folder-removed", "dev-full"])
def test_output_that_cannot_be_written_after_the_run(cli, tmp_path, where):
    # The folder was there when the run started (the check before the run passed) and is
    # gone when the run ends, or the device is full (/dev/full): the report is printed, its
    # last line says exit 2 as the run does (issue 19: it said exit 0), then one line, and
    # nothing is left.
    folder = tmp_path / "out"
    folder.mkdir()
    path = str(folder / "r.json") if where == "folder-removed" else "/dev/full"
    # The folder is removed during the probe: a longer SELECT 1 loop leaves time for it.
    run = cli(*SMALL, "--builds", "binary", "--json", path,
              profile="[workload]\nselect1_seconds = 2.0\n" if where == "folder-removed" else None)
    if where == "folder-removed":
        run.wait_until(lambda: during_probe(run), "the probe")
        folder.rmdir()
    exit_code, stdout, stderr = run.finish()
    assert exit_code == 2, stdout + stderr
    assert "binary" in stdout and "OK" in stdout  # the terminal report came first
    assert stdout.strip().splitlines()[-1].endswith("; exit 2"), stdout
    errors = [ln for ln in stderr.splitlines() if ln.startswith("geventprobe: error:")]
    why = "No such file" if where == "folder-removed" else "No space left on device"
    assert len(errors) == 1 and f"cannot write {path} ({why}" in errors[0], stderr
    assert "internal error" not in stderr and "Traceback" not in stdout + stderr
    assert where == "dev-full" or not folder.exists()
    assert_clean(run)


def _watchdog_of(run: CliProcess) -> psutil.Process:
    """The run's watchdog: a child of geventprobe in a session of its own."""
    for child in psutil.Process(run.proc.pid).children():
        if "geventprobe.processes.watchdog" in " ".join(child.cmdline()):
            return child
    pytest.fail("the run has no watchdog")


def test_killed_watchdog_is_replaced_and_the_user_told(cli):
    # Issue 19: kill -9 of the watchdog mid-run was silent, and the safety net was gone.
    run = cli(*SMALL, "--builds", "binary", profile=PROBE_1S)
    run.wait_until(lambda: during_probe(run), "the probe")
    old = _watchdog_of(run)
    old.kill()
    exit_code, stdout, stderr = run.finish()
    assert exit_code == 0, stdout + stderr
    text = " ".join(stdout.split())
    assert f"note: geventprobe's watchdog (pid {old.pid}) was killed by SIGKILL mid-run" in text
    assert "a new one (pid" in text and "took over" in text
    assert_clean(run)


def test_killed_watchdog_then_killed_geventprobe_leaves_nothing(cli):
    # The new watchdog knows every group and dir the old one did: it sweeps them all.
    run = cli(*SMALL, "--builds", "binary", profile=LONG_PROBE)
    run.wait_until(lambda: during_probe(run), "the probe")
    old = _watchdog_of(run)
    old.kill()
    deadline = time.monotonic() + 5
    while _watchdog_of_or_none(run, old.pid) is None and time.monotonic() < deadline:
        run.watch()
        time.sleep(0.02)  # replaced within a wait loop's next look
    assert _watchdog_of_or_none(run, old.pid) is not None, "no new watchdog"
    run.signal(signal.SIGKILL)
    run.proc.wait()
    left, files = _gone_within(run, 5.0)
    assert not left, f"processes left running 5 s after kill -9: {left}"
    assert not files, f"temp files left 5 s after kill -9: {files}"


def _watchdog_of_or_none(run: CliProcess, not_pid: int) -> psutil.Process | None:
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(run.proc.pid).children():
            if child.pid != not_pid and "geventprobe.processes.watchdog" in " ".join(
                    child.cmdline()):
                return child
    return None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_step_that_fails_because_the_server_was_stopped_names_the_server(probe_tmp, sig,
                                                                           monkeypatch):
    # Issue 19 row 16, the try in four that said "connection refused": the fast shutdown came
    # between the server's start and the first connect, before any guard looked. Whatever
    # step then fails, the server's stop is named.
    from geventprobe.errors import ProbeError
    from geventprobe.processes import children
    from geventprobe.processes.postgres import EmbeddedPostgres

    monkeypatch.setenv("TMPDIR", probe_tmp)
    try:
        with pytest.raises(ProbeError) as raised, EmbeddedPostgres(max_connections=10) as pg:
            os.kill(pg.proc.pid, sig)
            deadline = time.monotonic() + 10
            while not _refused(pg.port) and time.monotonic() < deadline:
                time.sleep(0.05)
            raise ProbeError(f"cannot connect to PostgreSQL at 127.0.0.1:{pg.port}: "
                             "connection refused (nothing listens there)")
    finally:
        children.cleanup()
    mode = {signal.SIGINT: "fast", signal.SIGTERM: "smart"}[sig]
    assert f"was asked to shut down mid-run ({mode} shutdown" in str(raised.value)


def _refused(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_server_stopped_while_it_starts_is_named(probe_tmp, sig, monkeypatch):
    # The same signal while the server was still starting said "did not start (no error in
    # its log): check that its programs work": they do; something stopped it.
    from geventprobe.errors import ProbeError
    from geventprobe.processes import children
    from geventprobe.processes.postgres import EmbeddedPostgres

    monkeypatch.setenv("TMPDIR", probe_tmp)
    sent: list[int] = []

    def not_ready_yet(self):
        if not sent:  # the signal arrives before the server says it is ready
            os.kill(self.proc.pid, sig)
            sent.append(self.proc.pid)
        return False

    monkeypatch.setattr(EmbeddedPostgres, "_pidfile_ready", not_ready_yet)
    try:
        with pytest.raises(ProbeError) as raised, EmbeddedPostgres(max_connections=10):
            pass
    finally:
        children.cleanup()
    mode = {signal.SIGINT: "fast", signal.SIGTERM: "smart"}[sig]
    assert str(raised.value).startswith(
        f"the embedded PostgreSQL (pid {sent[0]}) was asked to shut down while it was "
        f"starting ({mode} shutdown: {signal.Signals(sig).name} from outside geventprobe)")
