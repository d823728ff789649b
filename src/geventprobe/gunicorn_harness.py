"""Run the probe harness under real gunicorn gevent workers, for one build.

Starts ``gunicorn -k gevent -w N`` on a free loopback port with the harness app,
waits until every worker has opened its connections (``ready-<pid>.json``),
starts sampling the workers' CPU, says ``go``, collects one
``result-<pid>.json`` per worker and stops gunicorn. Each worker reports on its
own file; nothing is parsed out of stdout or the log, which is only read to
explain a failure.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field

from geventprobe import procs
from geventprobe.config import Workload
from geventprobe.cpu import CpuSampler
from geventprobe.dsn import redact

HARNESS_CONFIG = "python:geventprobe.harness.gunicorn_conf"
HARNESS_APP = "geventprobe.harness.app:application"


@dataclass
class HarnessRun:
    """What one gunicorn run produced: the workers' own reports and the CPU samples."""

    results: list[dict] = field(default_factory=list)
    cpu: CpuSampler | None = None
    error: str | None = None
    worker_timeouts: int = 0
    log_tail: list[str] = field(default_factory=list)
    boot_seconds: float | None = None


def _read_json_files(run_dir: str, prefix: str) -> dict[int, dict]:
    found = {}
    for path in glob.glob(os.path.join(run_dir, f"{prefix}-*.json")):
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError):
            continue  # a rename is atomic, so this is someone else's file: ignore it
        if isinstance(data, dict) and isinstance(data.get("pid"), int):
            found[data["pid"]] = data
    return found


def _log_tail(path: str, lines: int = 30) -> list[str]:
    try:
        with open(path, errors="replace") as f:
            return [redact(ln.rstrip()) for ln in f.readlines()[-lines:]]
    except OSError:
        return []


def _explain_exit(log: list[str]) -> str:
    """The most telling line of a gunicorn log that ended early."""
    for needle in ("Error", "error", "Exception", "failed to boot", "Reason:"):
        for line in reversed(log):
            if needle in line:
                return line.strip()
    return log[-1].strip() if log else "no output"


def gunicorn_argv(workers: int, timeout: int, preload: bool) -> list[str]:
    """The gunicorn command line for the built-in harness (no secrets on it)."""
    argv = [
        sys.executable, "-m", "gunicorn",
        "--worker-class", "gevent", "--workers", str(workers),
        "--bind", "127.0.0.1:0",
        "--config", HARNESS_CONFIG,
        "--timeout", str(timeout), "--graceful-timeout", "3",
        "--log-level", "info", "--error-logfile", "-",
    ]
    if preload:
        argv.append("--preload")
    argv.append(HARNESS_APP)
    return argv


def run_build(build_env: dict[str, str], workload: Workload, dsn: str, preload: bool
              ) -> HarnessRun:
    """Run the harness once under gunicorn with ``build_env`` on top of our environment."""
    run = HarnessRun()
    run_dir = tempfile.mkdtemp(prefix="geventprobe-run-")
    log_path = os.path.join(run_dir, "gunicorn.log")
    env = dict(os.environ)
    env.pop("GUNICORN_CMD_ARGS", None)  # the built-in harness runs as we say, not as the shell says
    env.update(build_env)
    env.update(
        GEVENTPROBE_RUN_DIR=run_dir,
        # Through the environment, not argv: /proc/<pid>/environ is readable by us alone.
        GEVENTPROBE_DSN=dsn,
        GEVENTPROBE_WORKLOAD=json.dumps(workload.to_worker()),
        PYTHONUNBUFFERED="1",
    )
    # A hub blocked for a whole window must not get the worker killed by the master.
    timeout = int(30 + workload.blocked_seconds())
    started = time.monotonic()
    try:
        proc = procs.spawn(gunicorn_argv(workload.workers, timeout, preload), env=env,
                           log_path=log_path, cwd=run_dir)
        with procs.running(proc, signal.SIGINT, timeout=10):
            ready = _wait_for(run_dir, "ready", workload.workers, workload.boot_timeout_s, proc)
            run.boot_seconds = time.monotonic() - started
            if ready is None:
                early = _read_json_files(run_dir, "result")
                if early:  # the probe failed before it got ready: its own words say why
                    run.results = list(early.values())
                else:
                    run.error = _failure(proc, log_path, "gunicorn workers did not get ready",
                                         workload.boot_timeout_s)
                return run
            pids = sorted(ready)
            with CpuSampler(pids) as sampler:
                with open(os.path.join(run_dir, "go"), "w"):
                    pass
                results = _wait_for(run_dir, "result", workload.workers,
                                    workload.probe_timeout_s(), proc, pids)
            run.cpu = sampler
            if results is None:
                run.error = _failure(proc, log_path, "the probe did not finish in every worker",
                                     workload.probe_timeout_s())
                results = _read_json_files(run_dir, "result")
            run.results = [results[p] for p in sorted(results)]
    finally:
        run.log_tail = _log_tail(log_path)
        run.worker_timeouts = sum("WORKER TIMEOUT" in line for line in run.log_tail)
        shutil.rmtree(run_dir, ignore_errors=True)
    return run


def _failure(proc, log_path: str, what: str, timeout: float) -> str:
    log = _log_tail(log_path)
    if proc.poll() is not None:
        return f"{what}: gunicorn exited with code {proc.returncode}: {_explain_exit(log)}"
    timeouts = [line for line in log if "WORKER TIMEOUT" in line]
    if timeouts:
        return f"{what}: gunicorn killed a worker whose hub was blocked ({timeouts[-1].strip()})"
    return f"{what} within {timeout:.0f} s"


def _wait_for(run_dir: str, prefix: str, count: int, timeout: float, proc,
              pids: list[int] | None = None) -> dict[int, dict] | None:
    """Wait until ``count`` workers wrote ``prefix-<pid>.json``; None on timeout or exit."""
    deadline = time.monotonic() + timeout
    while True:
        found = _read_json_files(run_dir, prefix)
        if pids is not None:
            found = {p: d for p, d in found.items() if p in pids}
        if len(found) >= count:
            return found
        if prefix == "ready" and _read_json_files(run_dir, "result"):
            return None  # a worker gave up before getting ready
        if proc.poll() is not None or time.monotonic() > deadline:
            return None
        time.sleep(0.02)
