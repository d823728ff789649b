"""``geventprobe run``: parse, call the core, render, pick the exit code."""

from __future__ import annotations

import dataclasses
import sys

import click

from geventprobe.builds import parse_builds
from geventprobe.cli.common import (
    ProgressListener,
    check_writable,
    handled_errors,
    progress_console,
    report_console,
)
from geventprobe.config import load_profile
from geventprobe.report import json_format, terminal
from geventprobe.runner import RunOptions, run


@click.command("run")
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
    console = progress_console()
    with handled_errors(debug):
        profile = load_profile(config_path)
        overrides = {k: v for k, v in (("workers", workers), ("greenlets", greenlets))
                     if v is not None}
        if overrides:
            profile = dataclasses.replace(
                profile, workload=dataclasses.replace(profile.workload, **overrides))
        builds, named = parse_builds(builds_text)
        check_writable(json_path, "--json")
        options = RunOptions(profile=profile, builds=builds, builds_named=named,
                             dsn=dsn or None, preload=preload,
                             command=["geventprobe", *sys.argv[1:]])
        with ProgressListener(console, total=len(builds)) as listener:
            result = run(options, listener)
        terminal.render(result, report_console())
        if json_path:
            json_format.write(result, json_path)
            console.print(f"geventprobe: wrote {json_path}")
    sys.exit(result.exit_code)
