"""Shared fixtures: a private TMPDIR that must end empty, and the CLI run as a real process."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

SCHEMA = Path(__file__).parent.parent / "src" / "geventprobe" / "schema" / "result.schema.json"


def our_processes(marker: str) -> list[psutil.Process]:
    """Live processes whose command line or working dir mentions ``marker``."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["cwd"] or "")
        except psutil.Error:
            continue
        if marker in text and proc.pid != os.getpid():
            found.append(proc)
    return found


def _tmpdir(proc: psutil.Process) -> str | None:
    try:
        return proc.environ().get("TMPDIR")
    except psutil.Error:  # gone, or a zombie: not running anything
        return None


def temp_parent() -> str:
    """Where a test's TMPDIR goes: where geventprobe puts its temp dirs when none is named
    (``children.temp_root``: memory, when it has room), else /tmp."""
    from geventprobe.processes import children

    env = {k: os.environ.pop(k) for k in ("TMPDIR", "TEMP", "TMP") if k in os.environ}
    try:
        return children.temp_root()
    finally:
        os.environ.update(env)


def pg_shared_memory() -> set[str]:
    """PostgreSQL's dynamic shared memory segments in /dev/shm (``PostgreSQL.<n>``): a
    server of ours must leave none behind, however it was stopped."""
    return set(glob.glob("/dev/shm/PostgreSQL.*"))


@pytest.fixture
def probe_tmp():
    """A TMPDIR for one geventprobe process; afterwards nothing may be left in it or running."""
    # World-traversable: as root the embedded server runs as another user.
    path = tempfile.mkdtemp(prefix="gp-test-", dir=temp_parent())
    os.chmod(path, 0o755)
    before_harness = {p.pid for p in our_processes("geventprobe.worker")}
    before_shm = pg_shared_memory()
    yield path
    leftovers = os.listdir(path) + sorted(pg_shared_memory() - before_shm)
    # Only harness processes of THIS run (they inherit its TMPDIR): other test runs on the
    # same machine start and reap their own meanwhile.
    running = our_processes(path) + [p for p in our_processes("geventprobe.worker")
                                     if p.pid not in before_harness and _tmpdir(p) == path]
    for proc in running:  # clean up for the next test, then fail this one
        proc.kill()
    shutil.rmtree(path, ignore_errors=True)
    assert not leftovers, f"temp files left behind: {leftovers}"
    assert not running, f"processes left running: {[p.pid for p in running]}"


@pytest.fixture
def run_cli(probe_tmp):
    """Run ``python -m geventprobe ARGS`` for real; return the CompletedProcess."""

    def run(*args: str, env: dict | None = None, timeout: float = 300,
            cwd: str | None = None) -> subprocess.CompletedProcess:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "GEVENTPROBE"))}
        full_env["TMPDIR"] = probe_tmp
        full_env.update(env or {})
        return subprocess.run([sys.executable, "-m", "geventprobe", *args], env=full_env,
                              capture_output=True, text=True, timeout=timeout, check=False,
                              cwd=cwd)

    return run


@pytest.fixture(scope="session")
def schema() -> dict:
    """The published JSON Schema of a run result."""
    return json.loads(SCHEMA.read_text())


def by_build(result: dict) -> dict[str, dict]:
    """The builds of a JSON result, by name."""
    return {b["build"]: b for b in result["builds"]}


@pytest.fixture(scope="session")
def env_cache():
    """A version-matrix environment cache (``GEVENTPROBE_CACHE_DIR``) for this test session.

    Shared by the session's tests, so one test reuses the environments another made;
    removed at the end of the session.
    """
    path = tempfile.mkdtemp(prefix="gp-test-envs-", dir=temp_parent())
    yield path
    shutil.rmtree(path, ignore_errors=True)


def pytest_configure(config):
    """The session's ``tmp_path`` dirs where geventprobe puts its own temp dirs (memory, when
    it has room; ``temp_parent``), unless ``--basetemp`` says where; removed at the end."""
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        config._gp_basetemp = config.option.basetemp = tempfile.mkdtemp(
            prefix="gp-pytest-", dir=temp_parent())


def pytest_unconfigure(config):
    path = getattr(config, "_gp_basetemp", None)
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- the slow tier

def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` (the whole agreement of the harness and geventprobe on every
    example: many minutes) run only when ``-m`` names them: ``pytest -m slow``."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]
        config._slow_deselected = len(slow)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    count = getattr(config, "_slow_deselected", 0)
    if count:
        terminalreporter.write_line(
            f"{count} slow tests not run (every example through the harness and geventprobe, "
            "~7 min): pytest -m slow tests/test_harness_agreement.py")
