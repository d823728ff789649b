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

from geventprobe.record import RunResult
from geventprobe.report import markdown, terminal

WIDTH = 100
"""Columns: what a log or an e-mail shows without wrapping."""


def _section(title: str) -> list[str]:
    return ["", title, "-" * len(title)]


def _plain(text: str) -> str:
    return text.replace("**", "")


def _wrap(line: str) -> list[str]:
    """One ``key: value`` line, wrapped to ``WIDTH`` with a hanging indent."""
    return textwrap.wrap(line, WIDTH, subsequent_indent="    ", break_on_hyphens=False) or [""]


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
        out += _section("Environment inside the workers")
        for row in rows:
            fact, values = _plain(row[0]).replace("`", ""), row[1:]
            known = [(build, v) for build, v in zip(headers[1:], values) if v != "–"]
            if len(set(values)) == 1 or not known:
                text = values[0]
            elif len({v for _, v in known}) == 1:  # the builds that have it agree
                text = f"{known[0][1]} ({', '.join(build for build, _ in known)})"
            else:
                text = "; ".join(f"{build}: {v}" for build, v in known)
            out += _wrap(f"{fact}: {text}")
    out += _section("PostgreSQL server")
    for k, v in markdown.server_rows(result):
        out += _wrap(f"{k}: {v}")
    out += _section("Machine")
    for k, v in markdown.machine_rows(result):
        out += _wrap(f"{k}: {v}")
    out += [*_section("Command and configuration"), *_wrap(markdown.command_line(result)),
            *[line for toml in markdown.profile_toml(result).splitlines()
              for line in _wrap(toml)]]
    if markdown.reproducible(result):
        out += ["", *_wrap("Reproduction scripts for " + ", ".join(
            markdown.label(b) for b in markdown.reproducible(result))
            + ": geventprobe report RESULT.json --format markdown (or html).")]
    out += ["", *_wrap(markdown.footer(result).replace("`", ""))]
    return "\n".join(out) + "\n"
