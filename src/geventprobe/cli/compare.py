"""``geventprobe compare BEFORE.json AFTER.json``: did the change fix it?"""

from __future__ import annotations

import sys

import click

from geventprobe.cli.common import debug_option, handled_errors, report_console, verbose_option
from geventprobe.compare import compare
from geventprobe.dsn import scrub_result
from geventprobe.errors import EXIT_FINDINGS, EXIT_OK, ProbeError
from geventprobe.report import comparison, load
from geventprobe.report.formats import Markdown, Terminal


@click.command("compare")
@click.argument("before_path", metavar="BEFORE.json")
@click.argument("after_path", metavar="AFTER.json")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]),
              default="text", show_default=True)
@click.option("--force", is_flag=True, help="Compare even runs whose workload, thresholds or "
              "machine differ (the figures are then not comparable).")
@click.option("--redact-hosts", is_flag=True,
              help="Also mask host names and IP addresses (passwords are always redacted).")
@verbose_option
@debug_option
def compare_command(before_path, after_path, fmt, force, redact_hosts, verbose, debug):
    """Per build: the verdict before and after, and how each evidence figure changed.

    Exit 0: compared, no build regressed. 1: a build that was OK blocks or
    busy-waits now. 2: bad input, or runs that cannot be compared (their
    workload, thresholds or machine differ; --force compares them anyway).
    """
    with handled_errors(debug):
        before = scrub_result(load.load(before_path), hosts=redact_hosts)
        after = scrub_result(load.load(after_path), hosts=redact_hosts)
        c = compare(before, after, force=force)
        if fmt == "json":
            click.echo(comparison.render_json(c), nl=False)
        elif fmt == "markdown":
            click.echo(Markdown().render(comparison.document(c)), nl=False)
        else:
            Terminal(report_console()).show(comparison.document(c), verbose)
        if c.refused and not c.forced:
            raise ProbeError(f"cannot compare {before_path} and {after_path}: {c.refused} "
                             "(run both with the same profile and flags on the same machine, "
                             "or pass --force)")
    sys.exit(EXIT_FINDINGS if c.regressed else EXIT_OK)

