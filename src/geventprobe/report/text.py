"""The plain-text report: the terminal report without colour, then the facts behind it.

For a terminal, a log or an e-mail: what ``geventprobe run`` printed (the same
``terminal`` renderer, without styles, ``WIDTH`` wide), followed by the
calibration outcome, the facts the workers reported, the server, the machine and the
command. The reproduction scripts are in the Markdown and HTML reports.
"""

from __future__ import annotations

import io
import textwrap

from rich.console import Console

from geventprobe.model import RunResult
from geventprobe.report import markdown, terminal

WIDTH = 100
"""Columns: what a log or an e-mail shows without wrapping."""


def _section(title: str) -> list[str]:
    return ["", title, "-" * len(title)]


def _plain(text: str) -> str:
    return text.replace("**", "")


def _columns(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*headers).rstrip()] + [fmt.format(*r).rstrip() for r in rows]


def render(result: RunResult, verbose: bool = False) -> str:
    """The whole plain-text report (``verbose``: the figures a 100-column table leaves out)."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=WIDTH, color_system=None, force_terminal=False,
                      highlight=False, emoji=False)
    terminal.render(result, console, verbose)
    # rich pads every line to the console width: a file wants no trailing blanks.
    out = [line.rstrip() for line in buffer.getvalue().rstrip("\n").splitlines()]
    out += [*_section("Verdict"), textwrap.fill(_plain(markdown.verdict_paragraph(result)), WIDTH)]
    if result.calibration is None:
        out += [*_section("Calibration"),
                textwrap.fill(_plain(markdown.calibration_status(result)), WIDTH)]
    headers, rows = markdown.worker_fact_rows(result)
    if rows:
        out += _section("Environment inside the workers") + _columns(
            headers, [[_plain(c).replace("`", "") for c in r] for r in rows])
    out += _section("PostgreSQL server") + [f"{k}: {v}" for k, v in markdown.server_rows(result)]
    out += _section("Machine") + [f"{k}: {v}" for k, v in markdown.machine_rows(result)]
    out += [*_section("Command and configuration"),
            *textwrap.wrap(markdown.command_line(result), WIDTH, break_on_hyphens=False),
            markdown.profile_toml(result)]
    if markdown.reproducible(result):
        out += ["", "Reproduction scripts for " + ", ".join(
            markdown.label(b) for b in markdown.reproducible(result))
            + ": geventprobe report RESULT.json --format markdown (or html)."]
    out += ["", markdown.footer(result).replace("`", "")]
    return "\n".join(out) + "\n"
