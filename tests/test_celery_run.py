"""``geventprobe run --celery`` end to end: the real CLI, real celery -P gevent workers, a real
redis-server and PostgreSQL.

Three examples of examples/celery/, each run once for several assertions (figures measured
in docs/celery.md; the limits sit between the classes):

- shared_connection: the worker (its probe task, a connection each) OK; the app's own task
  SERIALIZED (one connection for 16 tasks), exit 1; the record against its schema, the
  Markdown re-rendered byte for byte, the step summary;
- psycopg2_plain: BLOCKING, the queue many times each task's run (celery's runtime says
  0.2 s), the cause and a fix that fits a celery worker;
- worker_main (``--celery-cmd "python worker.py"``): no task ever starts, within the
  deadline; its stack, the cause (nothing patched), SIGKILL after SIGTERM.

Then (tests/apps/celery_limits) a second redis-server as the user's, named by
CELERY_BROKER_URL / CELERY_RESULT_BACKEND, untouched by a run whose tasks hit time limits;
the worker killed, and stopped, from outside mid-task (ERROR, never a verdict); and
``kill -9`` of geventprobe mid-run. After each: nothing left running, by pid, and no
temp file. (Bad input that needs a worker, an app that does not import and a task it
does not have, is in tests/test_bad_inputs.py.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jsonschema
import psutil
import pytest
from conftest import temp_parent
from manifests import expect

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).parent.parent / "examples" / "celery"
BIN = str(Path(sys.executable).parent)
STALL_2S = str(Path(__file__).parent / "apps" / "stall_2s.toml")


def _ours(tmp: str) -> list[psutil.Process]:
    """Live processes that run in ``tmp`` or got it as their TMPDIR (the worker, redis-server,
    PostgreSQL and its backends)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
                continue
            if proc.cwd().startswith(tmp) or proc.environ().get("TMPDIR") == tmp:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


class Run:
    """One ``geventprobe run`` in a TMPDIR of its own, its outputs and what it left."""

    def __init__(self, *args: str, env: dict | None = None, wait: bool = True):
        self.tmp = tempfile.mkdtemp(prefix="gp-test-celery-", dir=temp_parent())
        os.chmod(self.tmp, 0o755)  # as root, PostgreSQL runs as another user
        self.out = tempfile.mkdtemp(prefix="gp-test-celery-out-", dir="/tmp")
        self.json = os.path.join(self.out, "run.json")
        self.markdown = os.path.join(self.out, "run.md")
        self.summary = os.path.join(self.out, "summary.md")
        full = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "GEVENTPROBE"))}
        full.update(TMPDIR=self.tmp, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                    GITHUB_STEP_SUMMARY=self.summary, **(env or {}))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "geventprobe", "run", *args, "--json", self.json,
             "--markdown", self.markdown], env=full, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.started = time.monotonic()
        if wait:
            self.stdout, self.stderr = self.proc.communicate(timeout=120)
            self.seconds = time.monotonic() - self.started

    @property
    def code(self) -> int:
        return self.proc.returncode

    def record(self) -> dict:
        with open(self.json) as f:
            return json.load(f)

    def leftovers(self) -> tuple[list[int], list[str]]:
        return [p.pid for p in _ours(self.tmp)], os.listdir(self.tmp)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for proc in _ours(self.tmp):
            proc.kill()
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)
        shutil.rmtree(self.out, ignore_errors=True)


def _finished(run: Run) -> dict:
    assert "Traceback" not in run.stdout + run.stderr
    pids, files = run.leftovers()
    assert not pids, f"processes left running: {pids}"
    assert not files, f"temp files left behind: {files}"
    record = run.record()
    worker = record["builds"][0]["facts"].get("pid")
    if worker:
        assert not psutil.pid_exists(worker) or \
            psutil.Process(worker).status() == psutil.STATUS_ZOMBIE
    return record


@pytest.fixture(scope="module")
def shared():
    run = Run("--celery", "tasks", "--chdir", str(EXAMPLES / "shared_connection"),
              "--task", "tasks.query", "--task-kwargs", '{"seconds": 0.2}')
    yield run
    run.close()


def test_shared_connection_the_worker_ok_its_task_serialized(shared, schema):
    assert shared.code == 1, shared.stdout + shared.stderr
    record = _finished(shared)
    jsonschema.validate(record, schema)
    row = record["builds"][0]
    assert row["verdict"] == "OK" and record["exit_code"] == 1
    assert record["app"]["kind"] == "celery"
    probe, mine = row["tasks"]
    assert probe["probe"] and probe["verdict"] == "OK"
    assert probe["at_once"]["queue_max_s"] < 1.0  # measured ≤ 0.19; BLOCKING ≥ 3.25
    assert probe["at_once"]["finished"] == probe["concurrency"] == 16
    # A healthy worker is never sent the stack signal (a dump only for one found stalled).
    assert probe["stall"] is None and mine["stall"] is None
    assert mine["task"] == "tasks.query" and mine["verdict"] == expect("celery/shared_connection")
    assert mine["call"] == "tasks.query(seconds=0.2)"
    assert mine["at_once"]["queue_max_s"] < 1.0  # taken at once...
    assert mine["at_once"]["run_max_s"] > 8 * 0.2  # ...then one after another: 3.25 s
    assert mine["at_once"]["celery_runtime_max_s"] > 8 * 0.2  # celery sees it too
    assert mine["at_once"]["server_connections"] == 1
    assert mine["cause"].startswith("1 server connection for 16 concurrent tasks")
    facts = row["facts"]
    assert facts["select_patched"] and facts["psycopg"]["wait"] == "wait_poll"
    assert "worker_process_init" not in facts["celery"]["signals"]
    assert facts["celery"]["queue_removed"] and facts["celery"]["user_queues"] == ["celery"]
    assert facts["celery"]["stop"]["signal"] == "SIGKILL"  # the quick stop, figures all in
    assert "tasks.query SERIALIZED" in record["summary"]


def test_shared_connection_reports(shared, run_cli):
    markdown = Path(shared.markdown).read_text()
    assert "tasks through the broker" in markdown and "| tasks.query | SERIALIZED |" in markdown
    again = run_cli("report", shared.json, "--format", "markdown")
    assert again.returncode == 0 and again.stdout == markdown  # byte for byte
    summary = Path(shared.summary).read_text()
    assert "geventprobe: your celery worker under -P gevent" in summary


def test_psycopg2_without_psycogreen_is_blocking():
    run = Run("--celery", "tasks", "--chdir", str(EXAMPLES / "psycopg2_plain"))
    try:
        assert run.code == 1, run.stdout + run.stderr
        row = _finished(run)["builds"][0]
        assert row["verdict"] == expect("celery/psycopg2_plain")
        at_once = row["tasks"][0]["at_once"]
        # A blocked pool shows as queue time; celery's own runtime says each took ~w.
        assert at_once["queue_max_s"] > 10 * at_once["run_max_s"]
        assert at_once["celery_runtime_max_s"] < 2 * 0.2
        fired = {e["rule"] for e in row["evidence"] if e["fired"]}
        assert {"task-hub-lag", "task-queue"} <= fired
        assert "psycopg2 has no wait callback" in row["cause"]
        assert "worker_init" in row["advice"] and "post_worker_init" not in row["advice"]
        assert any("pg_sleep" in " ".join(s["frames"]) or "query" in (s["innermost"] or "")
                   for s in row["blocked_by"])
    finally:
        run.close()


def test_a_worker_started_by_worker_main_never_runs_a_task():
    run = Run("--celery-cmd", "python worker.py", "--chdir", str(EXAMPLES / "worker_main"),
              "--task", "tasks.query", "--config", STALL_2S)
    try:
        assert run.code == 1, run.stdout + run.stderr
        record = _finished(run)
        row = record["builds"][0]
        assert row["verdict"] == expect("celery/worker_main")
        probe = row["tasks"][0]
        stall = probe["stall"]
        assert stall["kind"] == "never-started" and stall["started"] == 0
        assert stall["hub_silent_s"] is None  # the heartbeat never ran
        assert stall["user_frame"].startswith("worker.py:")
        assert "SIGKILL" in stall["stopped"]
        assert "patched nothing" in row["cause"]
        assert "monkey.patch_all()" in row["advice"] and "celery program" in row["advice"]
        assert not row["facts"]["select_patched"]
        assert any(n.startswith("tasks.query was not run") for n in record["notes"])
    finally:
        run.close()


@pytest.fixture
def users_redis(tmp_path):
    """The user's own redis: a real redis-server on loopback, holding a queue of theirs."""
    import redis

    from geventprobe.processes.postgres import free_port

    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path), "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port, socket_timeout=5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.rpush("celery", "a task of theirs")
        client.set("their:key", "theirs")
        yield port, client
    finally:
        server.terminate()
        server.wait(timeout=10)


def _contents(client) -> dict:
    """Every key of every database with its value (DUMP), and the server's counters."""
    out = {}
    for db in range(16):
        client.execute_command("SELECT", db)
        out.update({(db, key): client.dump(key) for key in client.keys("*")})
    client.execute_command("SELECT", 0)
    return out


LIMITS = str(Path(__file__).parent / "apps" / "celery_limits")


def test_the_users_broker_is_never_touched_and_time_limits_are_named(users_redis):
    """Issue 25, rows 5 to 8, in one run.

    - Rows 7, 8: with CELERY_BROKER_URL / CELERY_RESULT_BACKEND set (settings commonly read
      them) the parent sent its tasks to the user's redis and left our queue there, and
      every run failed. Now the user's redis gets not one connection from the run (nor
      from the worker's own --result-backend, nor from the results of the user's tasks).
    - Row 5: a worker of -c 20 gets the run's 16 at once, not 20 (-c 1000 sent 1,000).
    - Row 6: celery's hard time limit stopped a task, and every output said `?`; a soft
      time limit, which celery's gevent pool never enforces, is a note.
    """
    port, client = users_redis
    theirs = f"redis://127.0.0.1:{port}"
    before = _contents(client)
    stats = client.info("stats")
    command = (f"{sys.executable} -m celery -A tasks --result-backend {theirs}/2 worker "
               "-P gevent -c 20")
    run = Run("--celery-cmd", command, "--chdir", LIMITS, "--task", "tasks.hard",
              "--task", "tasks.soft", env={"CELERY_BROKER_URL": f"{theirs}/0",
                                           "CELERY_RESULT_BACKEND": f"{theirs}/1"})
    try:
        assert run.code == 1, run.stdout + run.stderr  # tasks.hard is FAILING
        record = _finished(run)
        row = record["builds"][0]
        probe, hard, soft = row["tasks"]
        assert row["verdict"] == "OK" and probe["verdict"] == soft["verdict"] == "OK"
        assert row["facts"]["settings_restored"] == ["CELERY_RESULT_BACKEND"]
        after = client.info("stats")
        assert after["total_connections_received"] == stats["total_connections_received"]
        assert after["total_commands_processed"] == stats["total_commands_processed"] + 1
        assert _contents(client) == before

        assert row["facts"]["celery"]["concurrency"] == 20
        assert [t["at_once"]["size"] for t in row["tasks"]] == [16, 16, 16]
        assert any(n.startswith("your worker runs up to 20 tasks at once (-c 20); the probe "
                                "sent 16 at once") for n in record["notes"])

        assert hard["verdict"] == "FAILING" and hard["first_error"] == "TimeLimitExceeded(1)"
        assert hard["cause"].startswith("celery's hard time limit of 1 s stopped the task")
        assert "time_limit" in hard["advice"]
        assert any(n.startswith("tasks.soft has a soft time limit of 0.3 s but ran 0.6 s")
                   for n in record["notes"])
        # The Markdown up to its reproduction, which embeds the harness's own source.
        markdown = Path(run.markdown).read_text().partition("Reproduction")[0]
        shown = run.stdout + markdown + Path(run.json).read_text()
        assert "?" not in shown  # was `?` for the error, the state and the first error
    finally:
        run.close()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["kill-9", "stop"])
def test_a_worker_killed_or_stopped_from_outside_is_no_verdict(sig):
    """Issue 25 row 9: kill -9 of the worker while a task of the user's ran gave FAILING
    ("they wait on something that never comes"), kill -STOP gave BLOCKING with a fix for the
    hub: neither is the task's or the driver's doing. Now ERROR, the signal named, exit 2."""
    run = Run("--celery", "tasks", "--chdir", LIMITS, "--greenlets", "2", "--config", STALL_2S,
              "--task", "tasks.slow", "--task-args", "[4]", wait=False)
    try:
        # The probe's 4 tasks (warm-up, alone, 2 at once) are done and the user's began.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            dirs = [os.path.join(run.tmp, d) for d in os.listdir(run.tmp)
                    if d.startswith("geventprobe-celery-")]
            if dirs and len([f for f in os.listdir(dirs[0]) if f.startswith("started-")]) >= 5:
                boots = [f for f in os.listdir(dirs[0]) if f.startswith("boot-")]
                os.kill(int(boots[0][len("boot-"):-len(".json")]), sig)
                break
            time.sleep(0.02)
        else:
            pytest.fail("the user's task never started")
        run.stdout, run.stderr = run.proc.communicate(timeout=120)
        assert run.code == 2, run.stdout + run.stderr
        record = _finished(run)
        row = record["builds"][0]
        assert row["verdict"] == "ERROR" and row["tasks"][1]["verdict"] == "ERROR"
        said = ("was killed by SIGKILL mid-run" if sig == signal.SIGKILL
                else "did not run during the probe: it was stopped (process state T)")
        assert said in row["error"] and row["tasks"][1]["cause"] == row["error"]
        assert "find what stopped it" in row["advice"]
        assert "BLOCKING" not in run.stdout and "FAILING" not in run.stdout
    finally:
        run.close()


def _backend(cmdline: str) -> bool:
    """A PostgreSQL client backend (``postgres: USER DB [local] ...``), not the postmaster
    or one of its own processes (checkpointer, walwriter...)."""
    return cmdline.startswith("postgres: ") and ("[local]" in cmdline or "127.0.0.1" in cmdline)


def test_kill_9_mid_run_leaves_nothing_within_5_s():
    """kill -9 of geventprobe while its celery worker runs tasks: the watchdog stops the
    worker, redis-server and PostgreSQL (a client backend included) and removes every
    temp dir. psycopg2_plain: its blocked tasks hold a connection each for seconds."""
    run = Run("--celery", "tasks", "--chdir", str(EXAMPLES / "psycopg2_plain"), wait=False)
    try:
        deadline = time.monotonic() + 60
        seen: dict[int, str] = {}
        while time.monotonic() < deadline and run.proc.poll() is None:
            now = {p.pid: _cmdline(p) for p in _ours(run.tmp)}
            seen |= now
            names = list(now.values())  # all live at once: the kill lands mid-run
            if (any("redis-server" in n for n in names) and any("celery" in n for n in names)
                    and any(_backend(n) for n in names)):
                break
            time.sleep(0.02)
        else:
            pytest.fail(f"the worker, redis-server and a server backend were not all seen: "
                        f"{sorted(seen.values())}")
        seen |= {p.pid: _cmdline(p) for p in _ours(run.tmp)}
        run.proc.kill()
        run.proc.wait()
        deadline = time.monotonic() + 5
        while True:
            alive = [p for p in seen if psutil.pid_exists(p)
                     and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
            files = os.listdir(run.tmp)
            if (not alive and not files) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert not alive, f"left running 5 s after kill -9: {[seen[p] for p in alive]}"
        assert not files, f"temp files left 5 s after kill -9: {files}"
    finally:
        run.close()
