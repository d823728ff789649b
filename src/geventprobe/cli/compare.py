"""``geventprobe compare BEFORE.json AFTER.json``: did the change fix it?"""

from __future__ import annotations

import dataclasses
import json
import math
import sys

import click
from rich.table import Table
from rich.text import Text

from geventprobe.cli.common import debug_option, handled_errors, report_console
from geventprobe.compare import BuildChange, Comparison, FigureChange, compare
from geventprobe.dsn import scrub_result
from geventprobe.errors import EXIT_FINDINGS, EXIT_OK, ProbeError
from geventprobe.report import load
from geventprobe.report.markdown import md_table

_CHANGE_STYLE = {"fixed": "bold green", "regressed": "bold red", "changed": "bold yellow",
                 "unchanged": "", "added": "dim", "removed": "dim"}
_DIGITS = {"wait×": "{:.2f}", "hub lag ms": "{:,.1f}", "CPU/s waits": "{:.3f}",
           "CPU/query µs": "{:,.1f}", "request p99 ms": "{:,.1f}"}


_EVIDENCE = ("wait×", "hub lag ms", "CPU/s waits")
# The terminal table keeps to what fits in 160 columns: the evidence, then latency.
_TEXT_FIGURES = (*_EVIDENCE, "SELECT 1 p99 µs", "request p99 ms")


def ratio_text(ratio: float | None) -> str:
    """``×2.4`` when a figure grew, ``÷8.0`` when it shrank."""
    if ratio is None:
        return ""
    if ratio >= 1:
        return f"×{ratio:,.0f}" if ratio >= 100 else f"×{ratio:.2f}"
    if ratio == 0:
        return "→ 0"
    return f"÷{1 / ratio:,.0f}" if ratio <= 0.01 else f"÷{1 / ratio:.2f}"


def figure_text(f: FigureChange, with_ratio: bool = True) -> str:
    """``8.06 → 1.02 (÷7.90)``."""
    fmt = _DIGITS.get(f.figure, "{:,.0f}")

    def one(v):
        return "–" if v is None else fmt.format(v)

    text = f"{one(f.before)} → {one(f.after)}"
    if with_ratio and f.ratio is not None:
        text += f" ({ratio_text(f.ratio)})"
    return text


def _better(f: FigureChange) -> bool | None:
    # Within ±10 % is noise on a shared machine (STYLE: honest statistics).
    if f.ratio is None or 0.9 <= f.ratio <= 1.1:
        return None
    return (f.ratio < 1) == f.lower_is_better


def _verdicts(b: BuildChange) -> str:
    return f"{b.before or '–'} → {b.after or '–'}"


def _figure_names(c: Comparison) -> list[str]:
    names: list[str] = []
    for b in c.builds:
        names += [f.figure for f in b.figures if f.figure not in names]
    return names


def render_text(c: Comparison, console) -> None:
    """The comparison as a table, then what differs and the summary."""
    console.print(Text(f"before: {c.before}\nafter:  {c.after}", style="dim"))
    if c.refused and not c.forced:
        _differences_text(c, console)
        return
    names = [n for n in _figure_names(c) if n in _TEXT_FIGURES]
    t = Table(title="geventprobe compare: verdict and evidence, before → after",
              title_justify="left", header_style="bold")
    for name in ["build", "verdict", "change", *names]:
        t.add_column(name.replace("SELECT 1 ", ""), no_wrap=True, justify="left" if name in (
            "build", "verdict", "change") else "right")
    for b in c.builds:
        cells = []
        by_name = {f.figure: f for f in b.figures}
        for name in names:
            f = by_name.get(name)
            good = _better(f) if f else None
            style = "" if good is None or b.change in ("added", "removed") else (
                "green" if good else "red")
            cells.append(Text(figure_text(f, name in _EVIDENCE[:2]) if f else "–", style=style))
        t.add_row(b.build + (" †" if b.baseline else ""), _verdicts(b),
                  Text(b.change, style=_CHANGE_STYLE[b.change]), *cells)
    console.print(t)
    for b in c.builds:
        if b.facts:
            console.print(Text(f"{b.build}: ", style="bold")
                          + Text("; ".join(f"{d.what} {d.before} → {d.after}" for d in b.facts)))
    _differences_text(c, console)


def _differences_text(c: Comparison, console) -> None:
    if c.differences:
        console.print(Text("what differs between the runs:", style="bold"))
        for d in c.differences:
            mark = Text(" (makes the figures incomparable)", style="bold red") \
                if d.confounding else Text("")
            console.print(Text(f"  {d.what}: {d.before} → {d.after}") + mark)
    if not (c.refused and not c.forced):  # a refusal is said once, by the error line
        console.print(Text(c.summary, style="bold"))


def render_markdown(c: Comparison) -> str:
    """The comparison as GitHub Markdown (for an issue comment)."""
    out = ["## geventprobe compare", "", f"- before: `{c.before}`", f"- after: `{c.after}`", ""]
    if not (c.refused and not c.forced):
        names = _figure_names(c)
        rows = []
        for b in c.builds:
            by_name = {f.figure: f for f in b.figures}
            rows.append([b.build + (" †" if b.baseline else ""), _verdicts(b),
                         f"**{b.change}**" if b.change in ("fixed", "regressed") else b.change,
                         *[figure_text(by_name[n]) if n in by_name else "–" for n in names]])
        out += [md_table(["build", "verdict", "change", *names], rows,
                         right=range(3, 3 + len(names))), ""]
        for b in c.builds:
            if b.facts:
                out.append(f"- **{b.build}**: " + "; ".join(
                    f"{d.what} `{d.before}` → `{d.after}`" for d in b.facts))
        out.append("")
    if c.differences:
        out += ["What differs between the runs:", ""]
        out += [f"- {d.what}: `{d.before}` → `{d.after}`"
                + (" **(makes the figures incomparable)**" if d.confounding else "")
                for d in c.differences]
        out.append("")
    out += [f"**{c.summary}**", ""]
    return "\n".join(out)


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def render_json(c: Comparison) -> str:
    """The comparison as JSON (verdicts as their names, ratios included)."""
    data = dataclasses.asdict(c)
    for b, built in zip(data["builds"], c.builds):
        for f, fig in zip(b["figures"], built.figures):
            f["ratio"] = fig.ratio
    return json.dumps(_finite(data), indent=2, ensure_ascii=False) + "\n"


@click.command("compare")
@click.argument("before_path", metavar="BEFORE.json")
@click.argument("after_path", metavar="AFTER.json")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]),
              default="text", show_default=True)
@click.option("--force", is_flag=True, help="Compare even runs whose workload, thresholds or "
              "machine differ (the figures are then not comparable).")
@click.option("--redact-hosts", is_flag=True,
              help="Also mask host names and IP addresses (passwords are always redacted).")
@debug_option
def compare_command(before_path, after_path, fmt, force, redact_hosts, debug):
    """Per build: the verdict before and after, and how each evidence figure changed.

    Exit 0: compared, no build regressed. 1: a build that was OK blocks or
    busy-waits now. 2: bad input, or runs that cannot be compared (their
    workload, thresholds or machine differ; --force compares them anyway).
    """
    with handled_errors(debug):
        before = scrub_result(load.load(before_path), hosts=redact_hosts)
        after = scrub_result(load.load(after_path), hosts=redact_hosts)
        c = compare(before, after, force=force)
        if fmt == "markdown":
            click.echo(render_markdown(c), nl=False)
        elif fmt == "json":
            click.echo(render_json(c), nl=False)
        else:
            render_text(c, report_console())
        if c.refused and not c.forced:
            raise ProbeError(f"cannot compare {before_path} and {after_path}: {c.refused} "
                             "(run both with the same profile and flags on the same machine, "
                             "or pass --force)")
    sys.exit(EXIT_FINDINGS if c.regressed else EXIT_OK)

