"""``geventprobe calibrate``: prove on this machine that the detector sees each failure class."""

from __future__ import annotations

import sys

import click

from geventprobe import files
from geventprobe.cli.common import (
    ProgressListener,
    check_writable,
    debug_option,
    dsn_option,
    handled_errors,
    progress_console,
    report_console,
    rtt_option,
    say,
    verbose_option,
    warn_secret_argv,
)
from geventprobe.core import plan as plans
from geventprobe.core import runner
from geventprobe.report import json_format
from geventprobe.report import run as run_report
from geventprobe.report.formats import Terminal


@click.command("calibrate")
@click.option("--workers", type=click.IntRange(min=1, max=64), default=None,
              help="gunicorn workers per control [profile: 4].")
@click.option("--greenlets", type=click.IntRange(min=2, max=1000), default=None,
              help="Concurrent greenlets per worker [profile: 16].")
@dsn_option
@rtt_option
@click.option("--json", "json_path", metavar="PATH", default=None,
              help="Write the result (with its `calibration` record) as JSON.")
@click.option("--config", "config_path", metavar="PATH", default=None,
              help="TOML profile overriding configs/default.toml.")
@click.option("--profile", "profile_name", metavar="NAME", default=None,
              help="Named profile (default, quick, ci) [default, or `profile` in pyproject's "
                   "[tool.geventprobe]]: calibrate what your runs use.")
@verbose_option
@debug_option
def calibrate_command(workers, greenlets, dsn, rtt_ms, json_path, config_path, profile_name,
                      verbose, debug):
    """Run controls whose class is known inside real gunicorn gevent workers.

    BLOCKING controls: psycopg imported before patching (--preload), psycopg with
    PSYCOPG_WAIT_FUNC=wait_c, psycopg2 without a wait callback. BUSY-WAIT
    control: a wait that polls with a zero timeout and gevent.sleep(0). OK
    controls: every available healthy build.

    Exit 0: every control got its class. 1: one did not (named, with its
    figures). 2: usage or environment error. 3: the machine was too saturated
    to judge (inconclusive).
    """
    console = progress_console()
    with handled_errors(debug):
        plan = plans.for_calibrate(["geventprobe", *sys.argv[1:]], workers=workers,
                                   greenlets=greenlets, dsn=dsn, rtt_ms=rtt_ms,
                                   config_path=config_path, profile=profile_name)
        check_writable(json_path, "--json")
        warn_secret_argv(dsn)
        with ProgressListener(console, total=8, unit="controls") as listener:
            result = runner.run(plan, listener)
        # `--json -`: stdout carries the JSON alone, the report goes to stderr.
        Terminal(console if files.is_stdout(json_path) else report_console()).show(
            run_report.document(result), verbose)
        if json_path:
            json_format.write(result, json_path)
            if not files.is_stdout(json_path):
                say(f"geventprobe: wrote {json_path}")
    sys.exit(result.exit_code)
