"""``geventprobe report``: re-render a saved run without running anything."""

from __future__ import annotations

import os
import sys

import click
from rich.console import Console

from geventprobe import files
from geventprobe.cli.common import check_writable, debug_option, handled_errors, verbose_option
from geventprobe.dsn import scrub_result
from geventprobe.errors import ProbeError
from geventprobe.record import RunResult
from geventprobe.report import charts, html, json_format, load, markdown, text

FORMATS = ("markdown", "text", "json", "html", "png")


def for_output(result: RunResult, redact_hosts: bool = False) -> RunResult:
    """The record every output of ``run`` renders: redacted, and as its JSON reads back.

    Going through the JSON form makes ``run --markdown`` and a later
    ``report RESULT.json --format markdown`` byte-identical.
    """
    clean = scrub_result(result, hosts=redact_hosts)
    try:
        return load.from_dict(json_format.to_dict(clean))
    except ProbeError:  # a record this loader cannot read back must still be reported
        return clean


def write_run_outputs(result: RunResult, markdown_path: str | None, console: Console) -> None:
    """``run``'s Markdown report, and the job summary when ``$GITHUB_STEP_SUMMARY`` is set."""
    if markdown_path:
        markdown.write(result, markdown_path)
        if not files.is_stdout(markdown_path):
            console.print(f"geventprobe: wrote {markdown_path}", soft_wrap=True)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        try:
            markdown.append_step_summary(result, summary)
        except OSError as exc:
            # The run's verdict matters more than the summary: say so and go on.
            console.print(f"geventprobe: warning: cannot append to $GITHUB_STEP_SUMMARY "
                          f"{summary} ({exc.strerror})", soft_wrap=True, markup=False)


def _render(result: RunResult, fmt: str, verbose: bool = False) -> str | bytes:
    if fmt == "markdown":
        return markdown.render(result)
    if fmt == "text":
        return text.render(result, verbose)
    if fmt == "json":
        return json_format.render(result)
    if fmt == "html":
        return html.render(result)
    return charts.render_png(result)


@click.command("report")
@click.argument("result_path", metavar="RESULT.json")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="markdown",
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
        rendered = _render(result, fmt, verbose)
        if output is None:
            click.echo(rendered, nl=False)
        else:
            # Through a symlink, whole or not at all; `-o -` is stdout.
            files.write_atomic(output, rendered, "-o")
            if not files.is_stdout(output):
                click.echo(f"geventprobe: wrote {output}", err=True)
    sys.exit(0)
