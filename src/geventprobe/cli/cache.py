"""``geventprobe cache list|clear``: the isolated environments of version matrices."""

from __future__ import annotations

import shutil
import sys

import click
from rich.table import Table

from geventprobe.cache_dir import cache_root
from geventprobe.cli.common import debug_option, handled_errors, progress_console, report_console
from geventprobe.versions import venvs


def _size(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB"


@click.group("cache")
def cache_command() -> None:
    """The cached isolated environments of `run --psycopg/--gevent` and `bisect`.

    They live in the user cache dir (on Linux $XDG_CACHE_HOME/geventprobe or
    ~/.cache/geventprobe), or in $GEVENTPROBE_CACHE_DIR when set, beside the embedded
    PostgreSQL's initialised cluster (pgdata/, copied for each run instead of running
    initdb).
    """


@cache_command.command("list")
@debug_option
def list_command(debug):
    """List the cached environments: versions, size, last use."""
    with handled_errors(debug):
        envs = venvs.list_envs()
        console = report_console()
        console.print(f"cache: {venvs.envs_root()}")
        if not envs:
            console.print("no cached environments")
            sys.exit(0)
        t = Table(header_style="bold")
        for name in ("environment", "packages", "python", "installer", "size", "last used",
                     "missing"):
            t.add_column(name, no_wrap=name not in ("packages", "missing"))
        for e in envs:
            t.add_row(e.label, ", ".join(f"{k} {v}" for k, v in e.packages.items()), e.python,
                      e.installer, _size(e.size_bytes), e.last_used or "–",
                      ", ".join(e.missing) or "–")
        console.print(t)
        console.print(f"{len(envs)} environments, {_size(sum(e.size_bytes for e in envs))}")
    sys.exit(0)


@cache_command.command("clear")
@debug_option
def clear_command(debug):
    """Remove every cached environment and the embedded server's kept cluster (they are
    made again when needed)."""
    with handled_errors(debug):
        done = venvs.clear()
        console = progress_console()
        console.print(f"geventprobe: removed {len(done.removed)} environments "
                      f"({_size(done.freed_bytes)}) from {venvs.envs_root()}")
        pgdata = cache_root() / "pgdata"
        if pgdata.exists():
            shutil.rmtree(pgdata, ignore_errors=True)
            console.print(f"geventprobe: removed the embedded server's kept cluster ({pgdata})")
        if done.busy:
            console.print(f"geventprobe: {len(done.busy)} in use by another geventprobe left "
                          f"alone: {', '.join(done.busy)}")
    sys.exit(0)
