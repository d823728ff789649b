"""``geventprobe report``: re-render a saved run without running anything."""

from __future__ import annotations

import os
import sys

import click

from geventprobe import files, kinds
from geventprobe.cli.common import (
    check_writable,
    debug_option,
    handled_errors,
    say,
    verbose_option,
)
from geventprobe.dsn import scrub_result
from geventprobe.errors import ProbeError
from geventprobe.record import RunResult
from geventprobe.report import charts, job_summary, json_format, load, run
from geventprobe.report.document import Charts, Document
from geventprobe.report.formats import FORMATS, Markdown

CHOICES = ("markdown", "text", "json", "html", "png")


def write_run_outputs(doc: Document, markdown_path: str | None) -> None:
    """``run``'s Markdown report, and the job summary when ``$GITHUB_STEP_SUMMARY`` is set."""
    if markdown_path:
        write_markdown(doc, markdown_path)
        if not files.is_stdout(markdown_path):
            say(f"geventprobe: wrote {markdown_path}")
    append_job_summary(doc)


def write_markdown(doc: Document, markdown_path: str) -> None:
    """``run --markdown PATH`` (ProbeError, one line, if it cannot be written)."""
    files.write_atomic(markdown_path, Markdown().render(doc), "--markdown")


def append_job_summary(doc: Document) -> None:
    """The Markdown report appended to ``$GITHUB_STEP_SUMMARY`` when that is set; a warning,
    not a failure, when it cannot be."""
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        try:
            job_summary.append(doc, summary)
        except OSError as exc:
            # The run's verdict matters more than the summary: say so and go on.
            say(f"geventprobe: warning: cannot append to $GITHUB_STEP_SUMMARY {summary} "
                f"({exc.strerror})")


def render(result: RunResult, fmt: str, verbose: bool = False) -> str | bytes:
    """A saved run in one of ``CHOICES``: the record as JSON, the charts as PNG, or the run's
    document in a format."""
    if fmt == "json":
        return json_format.render(result)
    doc = run.document(result)
    if fmt == "png":
        block = next((b for b in doc.body if isinstance(b, Charts)), None)
        if block is None:
            raise ProbeError(_no_charts(result))
        return charts.render_png(block)
    return FORMATS[fmt]().render(doc, verbose)


def _no_charts(result: RunResult) -> str:
    """Why a saved run has nothing to chart, in the line ``--format png`` exits 2 with."""
    kind = kinds.report_of(result)
    if kind is not None:
        return kind.no_charts
    if not result.builds:
        return ("this run probed no build (geventprobe calibrate): it has no charts; render "
                "it with --format html, markdown or text")
    return ("no build of this run has figures to chart (every build was UNAVAILABLE or "
            "failed)")


@click.command("report")
@click.argument("result_path", metavar="RESULT.json")
@click.option("--format", "fmt", type=click.Choice(CHOICES), default="markdown",
              show_default=True, help="markdown: a GitHub issue attachment; html: one file "
              "with the charts; png: the charts alone (needs -o); text; json.")
@click.option("-o", "--output", "output", metavar="PATH", default=None,
              help="Write here instead of stdout.")
@click.option("--redact-hosts", is_flag=True,
              help="Also mask host names and IP addresses (passwords are always redacted).")
@verbose_option
@debug_option
def report_command(result_path, fmt, output, redact_hosts, verbose, debug):
    """Render a saved run (geventprobe run --json) as Markdown, text, JSON, HTML or PNG charts.

    Nothing is run: every format reads the same saved record. Exit 0 when the
    report was written, 2 when the file is not a result this version reads.
    """
    with handled_errors(debug):
        if fmt == "png" and output is None:
            raise ProbeError("--format png writes binary data: add -o PATH.png")
        check_writable(output, "-o")
        result = scrub_result(load.load(result_path), hosts=redact_hosts)
        rendered = render(result, fmt, verbose)
        if output is None:
            click.echo(rendered, nl=False)
        else:
            # Through a symlink, whole or not at all; `-o -` is stdout.
            files.write_atomic(output, rendered, "-o")
            if not files.is_stdout(output):
                click.echo(f"geventprobe: wrote {output}", err=True)
    sys.exit(0)
