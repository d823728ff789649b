"""``geventprobe bisect``'s search and answer as a document, and as JSON."""

from __future__ import annotations

import dataclasses

from geventprobe.record import BuildResult
from geventprobe.report import json_format
from geventprobe.report.builds import explanation
from geventprobe.report.cells import (
    VERDICT_STYLE,
    deciding,
    num,
    verdict_label,
    wait_name,
    wait_short,
)
from geventprobe.report.document import (
    COMPACT,
    Block,
    Cell,
    Column,
    Document,
    Paragraph,
    Table,
)
from geventprobe.versions.bisect import BisectResult


def figures(b: BuildResult) -> str:
    """``wait× 8.06, hub lag 1,212.0 ms, CPU/s waits 0.002``."""
    m = b.metrics
    if m is None:
        return ""
    return (f"wait× {m.wait_factor:.2f}, hub lag {m.max_hub_lag_ms:,.1f} ms, "
            f"CPU/s waits {num(m.cpu_during_waits, '{:.3f}')}")


def table(result: BisectResult) -> Table:
    """Every release in the range: what the search found there, or that it was not needed."""
    columns = [Column("release"), Column("step", True, 3), Column("verdict"), Column("wait"),
               Column("evidence", importance=COMPACT), Column("wait×", True, 2),
               Column("hub lag ms", True, 2), Column("CPU/s waits", True, 2),
               Column("environment", importance=4)]
    order = {s.release: i + 1 for i, s in enumerate(result.steps)}
    rows = []
    for release in result.releases:
        step = result.step(release)
        mark = ("  ← first bad" if release == result.first_bad else
                "  ← last good" if release == result.last_good else "")
        name = Cell(release + mark, "strong", release + mark.replace("  ← ", " ← "))
        if step is None:
            rows.append([name, Cell(""), Cell("not needed", "dim")] + [Cell("")] * 6)
            continue
        b = step.result
        if b is None:
            rows.append([name, Cell(str(order[release])),
                         Cell(f"skipped: {step.reason}", "dim", "skipped")] + [Cell("")] * 6)
            continue
        m = b.metrics
        env = step.environment
        rows.append([name, Cell(str(order[release])),
                     Cell(verdict_label(b), VERDICT_STYLE[b.verdict]),
                     Cell(wait_name(b), None, wait_short(b)),
                     Cell(deciding(b)),
                     Cell(num(m and m.wait_factor, "{:.2f}×")),
                     Cell(num(m and m.max_hub_lag_ms, "{:,.1f}")),
                     Cell(num(m and m.cpu_during_waits, "{:.3f}")),
                     Cell("" if env is None else ("cached" if env.cached else
                                                  f"created in {env.seconds:.1f} s"))])
    return Table(columns, rows,
                 caption="held: " + ", ".join(f"{k} {v}" for k, v in result.held.items()))


def evidence(result: BisectResult) -> list[Block]:
    """The first bad release's evidence and its good neighbour's, and what changed."""
    bad = result.step(result.first_bad)
    good = result.step(result.last_good)
    out: list[Block] = []
    if bad is not None and bad.result is not None:
        b = bad.result
        out.append(Paragraph(f"{b.verdict.value} (wait function {wait_name(b)}; {figures(b)})",
                             lead=f"{result.package} {result.first_bad}:",
                             style=VERDICT_STYLE[b.verdict]))
        out += explanation(b)
    if good is not None and good.result is not None:
        g = good.result
        out.append(Paragraph(f"{g.verdict.value} (wait function {wait_name(g)}; {figures(g)})",
                             lead=f"{result.package} {result.last_good} (the release before):",
                             style=VERDICT_STYLE[g.verdict]))
        if bad is not None and bad.result is not None and wait_name(g) != wait_name(bad.result):
            out.append(Paragraph(f"the workers' wait function went from {wait_name(g)} "
                                 f"({result.last_good}) to {wait_name(bad.result)} "
                                 f"({result.first_bad})", lead="what changed:", indent=1))
    return out


def document(result: BisectResult) -> Document:
    """The table, the evidence, the conclusion."""
    return Document(
        headline=f"geventprobe bisect: {result.package} releases, build {result.build}"
                 + (" (--preload)" if result.preload else ""),
        verdict=f"{result.conclusion}; exit {result.exit_code}",
        verdict_style="strong" if result.exit_code == 0 else "warn",
        body=[table(result), *evidence(result)], failed=result.exit_code != 0)


def render_json(result: BisectResult) -> str:
    """The whole bisect as JSON."""
    return json_format.dumps(json_format.plain(dataclasses.asdict(result)))
