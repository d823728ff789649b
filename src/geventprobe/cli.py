"""The command line: parse, call the core, render, pick the exit code. Nothing else.

Exit codes: 0 every psycopg 3 build under test cooperates; 1 one of them BLOCKS
or BUSY-WAITs; 2 usage or environment error (or a probe that failed);
3 inconclusive (a baseline did not get its known class); 130 interrupted.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import traceback

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from geventprobe import __version__
from geventprobe.builds import parse_builds
from geventprobe.config import load_profile
from geventprobe.errors import EXIT_INTERRUPTED, EXIT_USAGE, ProbeError
from geventprobe.model import BuildResult
from geventprobe.report import json_format, terminal
from geventprobe.runner import RunOptions, run


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so every context manager cleans up."""


def _on_sigterm(signum, frame):
    raise Terminated()


class ProgressListener:
    """Draws progress on stderr: a live bar on a terminal, plain lines otherwise."""

    def __init__(self, console: Console, total: int):
        self.console = console
        self.live = console.is_terminal
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total} builds"),
                                 TimeElapsedColumn(), console=console, transient=True)
        self.task = self.progress.add_task("starting", total=total)

    def __enter__(self) -> ProgressListener:
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.live:
            self.progress.stop()

    def phase(self, text: str) -> None:
        if self.live:
            self.progress.update(self.task, description=text)
        else:
            self.console.print(f"geventprobe: {text}", highlight=False)

    def build_started(self, build: str, index: int, total: int) -> None:
        self.phase(f"{build}: gunicorn -k gevent, probing every worker")

    def build_finished(self, result: BuildResult) -> None:
        self.progress.advance(self.task)
        line = f"{result.build}: {result.verdict}"
        if result.duration_s:
            line += f" ({result.duration_s:.1f} s)"
        if self.live:
            self.progress.console.print(f"  {line}", highlight=False)
        else:
            self.console.print(f"geventprobe: {line}", highlight=False)


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    click.echo(f"geventprobe: error: {message}", err=True)
    sys.exit(code)


def _check_writable(path: str | None, flag: str) -> None:
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ProbeError(f"cannot write {flag} {path}: {folder} is not a writable directory")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geventprobe")
def main() -> None:
    """Does your PostgreSQL driver block or busy-wait under gunicorn -k gevent?"""


@main.command("run")
@click.option("--workers", type=click.IntRange(min=1, max=64), default=None,
              help="gunicorn workers per build [profile: 4].")
@click.option("--greenlets", type=click.IntRange(min=2, max=1000), default=None,
              help="Concurrent greenlets (one connection each) per worker [profile: 16].")
@click.option("--builds", "builds_text", metavar="LIST", default=None,
              help="Comma-separated: binary,c,python,psycopg2-green,psycopg2 [all].")
@click.option("--dsn", envvar="GEVENTPROBE_DSN", default=None, metavar="DSN",
              help="Your PostgreSQL (libpq conninfo or URI; env GEVENTPROBE_DSN keeps it out "
                   "of ps). Default: PG* environment if set, else an embedded throwaway server.")
@click.option("--preload", is_flag=True, help="Run gunicorn with --preload (app imported in "
              "the master, before the workers patch).")
@click.option("--json", "json_path", metavar="PATH", default=None,
              help="Write the whole result as JSON.")
@click.option("--config", "config_path", metavar="PATH", default=None,
              help="TOML profile overriding configs/default.toml.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def run_command(workers, greenlets, builds_text, dsn, preload, json_path, config_path, debug):
    """Probe each driver build inside real gunicorn gevent workers and judge it.

    Exit 0: every psycopg 3 build cooperates. 1: one BLOCKS or BUSY-WAITs.
    2: usage/environment error or failed probe. 3: inconclusive (a baseline
    missed its known class). 130: interrupted.
    """
    signal.signal(signal.SIGTERM, _on_sigterm)
    console = Console(stderr=True)
    try:
        profile = load_profile(config_path)
        overrides = {k: v for k, v in (("workers", workers), ("greenlets", greenlets))
                     if v is not None}
        if overrides:
            profile = dataclasses.replace(
                profile, workload=dataclasses.replace(profile.workload, **overrides))
        builds, named = parse_builds(builds_text)
        _check_writable(json_path, "--json")
        options = RunOptions(profile=profile, builds=builds, builds_named=named,
                             dsn=dsn if dsn else None, preload=preload,
                             command=["geventprobe", *sys.argv[1:]])
        with ProgressListener(console, total=len(builds)) as listener:
            result = run(options, listener)
    except ProbeError as exc:
        if debug:
            traceback.print_exc()
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted: every process and temp dir it started was cleaned up",
              EXIT_INTERRUPTED)
    except Terminated:
        _fail("terminated by SIGTERM: every process and temp dir it started was cleaned up")
    except Exception as exc:
        if debug:
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the "
              "traceback, and please report it)")
    # CI logs are not terminals: give the table room instead of rich's 80 columns.
    out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    terminal.render(result, out)
    if json_path:
        json_format.write(result, json_path)
        console.print(f"geventprobe: wrote {json_path}", highlight=False)
    sys.exit(result.exit_code)
