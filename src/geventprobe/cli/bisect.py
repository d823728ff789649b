"""``geventprobe bisect``: parse, call the core, render the search and its answer, exit."""

from __future__ import annotations

import dataclasses
import json
import sys

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from geventprobe import bisect, files
from geventprobe.builds import parse_builds
from geventprobe.cli.common import (
    ProgressListener,
    check_writable,
    debug_option,
    dsn_option,
    handled_errors,
    progress_console,
    report_console,
)
from geventprobe.config import load_profile
from geventprobe.files import write_atomic
from geventprobe.model import BuildResult
from geventprobe.report import json_format
from geventprobe.report.terminal import explanation, verdict_text, wait_name
from geventprobe.runner import RunOptions

_JUDGEMENT_STYLE = {bisect.GOOD: "green", bisect.BAD: "red", bisect.SKIP: "dim",
                    bisect.ERROR: "yellow"}


def _figures(b: BuildResult) -> str:
    m = b.metrics
    if m is None:
        return ""
    cpu = "–" if m.cpu_during_waits is None else f"{m.cpu_during_waits:.3f}"
    return (f"wait× {m.wait_factor:.2f}, hub lag {m.max_hub_lag_ms:,.1f} ms, "
            f"CPU/s waits {cpu}")


def table(result: bisect.BisectResult) -> Table:
    """Every release in the range: what the search found there, or that it was not needed."""
    t = Table(title=f"geventprobe bisect: {result.package} releases, build {result.build}"
                    + (" (--preload)" if result.preload else ""),
              title_justify="left", header_style="bold", caption_justify="left",
              caption="held: " + ", ".join(f"{k} {v}" for k, v in result.held.items()))
    for name, justify in [("release", "left"), ("step", "right"), ("verdict", "left"),
                          ("wait", "left"), ("wait×", "right"), ("hub lag ms", "right"),
                          ("CPU/s waits", "right"), ("environment", "left")]:
        t.add_column(name, justify=justify, no_wrap=name != "verdict")
    order = {s.release: i + 1 for i, s in enumerate(result.steps)}
    for release in result.releases:
        step = result.step(release)
        label = Text(release)
        if release == result.first_bad:
            label.append("  ← first bad", style="bold red")
        elif release == result.last_good:
            label.append("  ← last good", style="bold green")
        if step is None:
            t.add_row(label, "", Text("not needed", style="dim"), "", "", "", "", "")
            continue
        b = step.result
        if b is None:
            t.add_row(label, str(order[release]), Text(f"skipped: {step.reason}", style="dim"),
                      "", "", "", "", "")
            continue
        m = b.metrics
        env = step.environment
        t.add_row(label, str(order[release]), verdict_text(b), wait_name(b),
                  "–" if m is None else f"{m.wait_factor:.2f}×",
                  "–" if m is None else f"{m.max_hub_lag_ms:,.1f}",
                  "–" if m is None or m.cpu_during_waits is None else f"{m.cpu_during_waits:.3f}",
                  "" if env is None else ("cached" if env.cached else
                                          f"created in {env.seconds:.1f} s"))
    return t


def evidence(result: bisect.BisectResult) -> list[Text]:
    """The first bad release's evidence and its good neighbour's, and what changed."""
    bad = result.step(result.first_bad)
    good = result.step(result.last_good)
    lines: list[Text] = []
    if bad is not None and bad.result is not None:
        b = bad.result
        head = Text(f"{result.package} {result.first_bad}: ", style="bold")
        head.append(b.verdict.value, style="bold red")
        head.append(f" (wait function {wait_name(b)}; {_figures(b)})")
        lines.append(head)
        lines += explanation(b)
    if good is not None and good.result is not None:
        g = good.result
        head = Text(f"{result.package} {result.last_good} (the release before): ", style="bold")
        head.append(g.verdict.value, style="bold green")
        head.append(f" (wait function {wait_name(g)}; {_figures(g)})")
        lines.append(head)
        if bad is not None and bad.result is not None and wait_name(g) != wait_name(bad.result):
            lines.append(Text(f"  what changed: the workers' wait function went from "
                              f"{wait_name(g)} ({result.last_good}) to "
                              f"{wait_name(bad.result)} ({result.first_bad})"))
    return lines


def render(result: bisect.BisectResult, console: Console) -> None:
    """The table, the evidence, the conclusion."""
    console.print(table(result))
    for line in evidence(result):
        console.print(line)
    style = "bold" if result.exit_code == 0 else "bold yellow"
    console.print(Text(f"{result.conclusion}; exit {result.exit_code}", style=style))


def write_json(result: bisect.BisectResult, path: str) -> None:
    """The whole bisect as JSON (write then rename)."""
    write_atomic(path, json.dumps(json_format.plain(dataclasses.asdict(result)), indent=2,
                                  ensure_ascii=False) + "\n")


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
@click.option("--preload", is_flag=True, help="Probe with gunicorn --preload.")
@click.option("--json", "json_path", metavar="PATH", default=None,
              help="Write the whole bisect as JSON.")
@click.option("--config", "config_path", metavar="PATH", default=None,
              help="TOML profile overriding configs/default.toml.")
@debug_option
def bisect_command(good, bad, build_name, package, workers, greenlets, dsn, preload, json_path,
                   config_path, debug):
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
        profile = load_profile(config_path)
        # Several probes in a row: a small workload by default (the classes are far apart,
        # wait× ≈ 1 against ≈ greenlets), a --config profile's own sizes if one is given.
        small = config_path is None
        profile = dataclasses.replace(profile, workload=dataclasses.replace(
            profile.workload,
            workers=workers or (2 if small else profile.workload.workers),
            greenlets=greenlets or (8 if small else profile.workload.greenlets)))
        builds, _ = parse_builds(build_name, "--build")
        check_writable(json_path, "--json")
        run_options = RunOptions(profile=profile, builds=builds, builds_named=True,
                                 dsn=dsn or None, preload=preload,
                                 command=["geventprobe", *sys.argv[1:]])
        opts = bisect.BisectOptions(run=run_options, package=package, good=good, bad=bad)
        releases = bisect.releases_for(opts)
        console.print(f"geventprobe: {len(releases)} releases of {package} from {good} to "
                      f"{bad}: {', '.join(releases)}")
        with ProgressListener(console, total=bisect.max_steps(len(releases)),
                              unit="probes") as listener:
            result = bisect.run(opts, listener, releases=releases)
        # `--json -`: stdout carries the JSON alone, the report goes to stderr.
        render(result, console if files.is_stdout(json_path) else report_console())
        if json_path:
            write_json(result, json_path)
            if not files.is_stdout(json_path):
                console.print(f"geventprobe: wrote {json_path}", soft_wrap=True)
    sys.exit(result.exit_code)
