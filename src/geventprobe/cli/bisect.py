"""``geventprobe bisect``: parse, call the core, render the search and its answer, exit."""

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
from geventprobe.core.builds import parse_builds
from geventprobe.files import write_atomic
from geventprobe.report import bisection
from geventprobe.report.formats import Terminal
from geventprobe.versions import bisect


@click.command("bisect")
@click.option("--good", required=True, metavar="RELEASE",
              help="A release known (or thought) to be OK, e.g. 3.1.4.")
@click.option("--bad", required=True, metavar="RELEASE",
              help="A later release that BLOCKS or BUSY-WAITs, e.g. 3.1.12.")
@click.option("--build", "build_name", default="binary", show_default=True, metavar="BUILD",
              help="The build to probe: binary, c or python (any build for --package gevent).")
@click.option("--package", default="psycopg", show_default=True, metavar="NAME",
              help="What to bisect: psycopg or gevent (the other is held to ours).")
@click.option("--workers", type=click.IntRange(min=1, max=64), default=None,
              help="gunicorn workers per probe [2: a bisect runs several probes].")
@click.option("--greenlets", type=click.IntRange(min=2, max=1000), default=None,
              help="Concurrent greenlets (one connection each) per worker [8].")
@dsn_option
@rtt_option
@click.option("--preload", is_flag=True, help="Probe with gunicorn --preload.")
@click.option("--json", "json_path", metavar="PATH", default=None,
              help="Write the whole bisect as JSON.")
@click.option("--config", "config_path", metavar="PATH", default=None,
              help="TOML profile overriding configs/default.toml.")
@verbose_option
@debug_option
def bisect_command(good, bad, build_name, package, workers, greenlets, dsn, rtt_ms, preload,
                   json_path, config_path, verbose, debug):
    """Find the first release of psycopg (or gevent) whose build blocks or busy-waits.

    Lists the releases from --good to --bad on the package index, probes both
    ends, then binary-searches between them; each release runs in its own cached
    isolated environment (see `geventprobe cache`). Exit 0: found. 2: usage or
    environment error, a probe failed, or an end cannot be tested. 3:
    inconclusive (an end is not what was claimed, or untestable releases hide
    the boundary). 130: interrupted.
    """
    console = progress_console()
    with handled_errors(debug):
        builds, _ = parse_builds(build_name, "--build")
        plan = plans.for_bisect(["geventprobe", *sys.argv[1:]], builds, workers=workers,
                                greenlets=greenlets, dsn=dsn, rtt_ms=rtt_ms, preload=preload,
                                config_path=config_path)
        check_writable(json_path, "--json")
        warn_secret_argv(dsn)
        opts = bisect.BisectOptions(run=plan, builds=builds, package=package, good=good,
                                    bad=bad)
        releases = bisect.releases_for(opts)
        console.print(f"geventprobe: {len(releases)} releases of {package} from {good} to "
                      f"{bad}: {', '.join(releases)}")
        with ProgressListener(console, total=bisect.max_steps(len(releases)),
                              unit="probes") as listener:
            result = bisect.run(opts, listener, releases=releases)
        # `--json -`: stdout carries the JSON alone, the report goes to stderr.
        Terminal(console if files.is_stdout(json_path) else report_console()).show(
            bisection.document(result), verbose)
        if json_path:
            write_atomic(json_path, bisection.render_json(result))
            if not files.is_stdout(json_path):
                say(f"geventprobe: wrote {json_path}")
    sys.exit(result.exit_code)
