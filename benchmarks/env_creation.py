"""Time to make a version matrix's isolated environment, and what the cache saves.

For each installer available (pip always; uv when on PATH), R times (default 3), in a
fresh temp cache: create the environment `--psycopg 3.1.12 --builds binary` needs
(psycopg, psycopg-binary, gevent, gunicorn, packaging), then ask for it again
(reused from the cache). Then, per installer, the whole `geventprobe run --psycopg
3.1.12,3.3.8 --builds binary --workers 2 --greenlets 8` twice in a fresh cache:
first run (environments created) and second run (reused). Prints min / median / max.

Downloads come from the installers' own caches (~/.cache/pip, ~/.cache/uv) once they
are warm: the first run on a machine also downloads (a few MB per environment).

    .venv/bin/python benchmarks/env_creation.py [--runs 3] [--no-cli]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

from geventprobe.core.builds import parse_builds
from geventprobe.versions import matrix, venvs


def fmt(values: list[float]) -> str:
    return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f} s"


def time_ensure(installer: str, runs: int) -> tuple[list[float], list[float]]:
    builds, _ = parse_builds("binary")
    cell = matrix.plan(builds, matrix.requested("3.1.12", None), named=True)[0]
    created, reused = [], []
    for _ in range(runs):
        cache = tempfile.mkdtemp(prefix="gp-bench-envs-")
        os.environ[venvs.CACHE_ENV] = cache
        os.environ[venvs.INSTALLER_ENV] = installer
        try:
            t = time.monotonic()
            env = venvs.ensure(cell.spec)
            created.append(time.monotonic() - t)
            assert env.error is None and not env.missing, (env.error, env.missing)
            t = time.monotonic()
            assert venvs.ensure(cell.spec).cached
            reused.append(time.monotonic() - t)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    return created, reused


def time_cli(installer: str, runs: int) -> tuple[list[float], list[float]]:
    first, second = [], []
    argv = [sys.executable, "-m", "geventprobe", "run", "--psycopg", "3.1.12,3.3.8",
            "--builds", "binary", "--workers", "2", "--greenlets", "8"]
    for _ in range(runs):
        cache = tempfile.mkdtemp(prefix="gp-bench-envs-")
        env = dict(os.environ, **{venvs.CACHE_ENV: cache, venvs.INSTALLER_ENV: installer})
        try:
            for bucket in (first, second):
                t = time.monotonic()
                proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
                bucket.append(time.monotonic() - t)
                assert proc.returncode == 1, proc.stderr[-2000:]  # 3.1.12 BLOCKING
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    return first, second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-cli", action="store_true", help="skip the whole-run timing")
    parser.add_argument("--no-ensure", action="store_true", help="skip the environment timing")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {psutil.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.platform()}, "
          f"Python {platform.python_version()}")
    installers = ["pip"] + (["uv"] if shutil.which("uv") else [])
    for installer in installers if not args.no_ensure else []:
        created, reused = time_ensure(installer, args.runs)
        print(f"{installer}: create {fmt(created)}; reuse from the cache {fmt(reused)} "
              f"(min / median / max over {args.runs})", flush=True)
    for installer in installers if not args.no_cli else []:
        first, second = time_cli(installer, args.runs)
        print(f"{installer}: run --psycopg 3.1.12,3.3.8 --builds binary (2×8): first "
              f"{fmt(first)}; second, environments cached {fmt(second)}", flush=True)


if __name__ == "__main__":
    main()
