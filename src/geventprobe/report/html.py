"""The HTML report: one self-contained file (inline CSS, charts as a base64 PNG).

Same content as the Markdown report (it formats the same section builders),
plus the charts. It loads nothing from the network, so it opens offline, from
a CI artifact or an e-mail attachment. Without matplotlib it says how to get
the charts instead.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence

from geventprobe.errors import ProbeError
from geventprobe.files import write_atomic
from geventprobe.record import BuildResult, RunResult, Verdict
from geventprobe.report import charts, markdown, repro

_CSS = """
body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2328;
       max-width: 1320px; margin: 24px auto; padding: 0 16px; }
h1 { font-size: 22px; border-bottom: 1px solid #d0d7de; padding-bottom: 6px; }
h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
h3 { font-size: 15px; margin-bottom: 4px; }
p.verdict { font-size: 15px; background: #f6f8fa; border-left: 4px solid #57606a;
            padding: 10px 14px; }
p.verdict.bad { border-left-color: #c62828; } p.verdict.good { border-left-color: #2e7d32; }
table { border-collapse: collapse; margin: 8px 0; }
div.scroll { overflow-x: auto; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; vertical-align: top; }
th { background: #f6f8fa; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.dim { color: #8c959f; font-style: italic; }
.badge { font-weight: 600; padding: 1px 6px; border-radius: 4px; white-space: nowrap; }
.OK { background: #dafbe1; color: #1a7f37; } .BLOCKING { background: #ffebe9; color: #c62828; }
.BUSY-WAIT { background: #fbefff; color: #8e24aa; } .ERROR { background: #fff8c5; color: #9a6700; }
.UNAVAILABLE { background: #eaeef2; color: #57606a; }
.SERIALIZED, .FAILING { background: #ffebe9; color: #c62828; }
.INCONCLUSIVE { background: #fff8c5; color: #9a6700; }
code, pre { font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
code { background: #eff1f3; padding: 1px 4px; border-radius: 4px; }
pre { background: #f6f8fa; padding: 10px 12px; overflow-x: auto; border-radius: 6px; }
pre code { background: none; padding: 0; }
.legend, footer { color: #57606a; font-size: 12.5px; }
img.charts { max-width: 100%; border: 1px solid #d0d7de; }
.note { background: #fff8c5; padding: 8px 12px; border-radius: 6px; }
"""


def _inline(text: str) -> str:
    """Escape ``text`` and turn the Markdown report's `code` and **bold** into HTML."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _badge(verdict: Verdict, text: str | None = None) -> str:
    return f'<span class="badge {verdict.value}">{html.escape(text or verdict.value)}</span>'


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = (),
           cell_html: dict[tuple[int, int], str] | None = None,
           dim: set[tuple[int, int]] | None = None) -> str:
    cell_html = cell_html or {}
    dim = dim or set()
    out = ['<div class="scroll"><table>',
           "<tr>" + "".join(f"<th>{_inline(h)}</th>" for h in headers) + "</tr>"]
    for r, row in enumerate(rows):
        cells = []
        for c, value in enumerate(row):
            classes = [k for k, on in (("num", c in numeric), ("dim", (r, c) in dim)) if on]
            attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attr}>{cell_html.get((r, c), _inline(value))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table></div>")
    return "\n".join(out)


def _pairs(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{_inline(k)}</th><td>{_inline(v)}</td></tr>"
                               for k, v in rows) + "</table>"


def _charts(result: RunResult) -> str:
    if not charts.chartable(result):
        return '<p class="note">No build of this run has figures to chart.</p>'
    try:
        png = charts.render_png(result)
    except charts.ChartsUnavailable:
        return ('<p class="note">Charts (hub lag over time and <code>SELECT 1</code> latency, '
                "per build) need matplotlib: <code>"
                f"{html.escape(charts.INSTALL_HINT)}</code>, then "
                "<code>geventprobe report RESULT.json --format html</code> again.</p>")
    data = base64.b64encode(png).decode("ascii")
    return (f'<img class="charts" alt="hub lag over time and SELECT 1 latency, per build" '
            f'src="data:image/png;base64,{data}">')


def _build_details(b: BuildResult) -> str:
    out = [f"<h3>{html.escape(markdown.label(b))}: "
           f"{_badge(b.verdict, markdown.verdict_label(b))}</h3>"]
    if b.baseline and b.verdict.value == b.expected:
        out.append("<p>Baseline, as expected.</p>")
    if b.verdict is Verdict.UNAVAILABLE:
        out.append(f"<p>Not tested: {_inline(b.cause or '')}. Install: "
                   f"<code>{html.escape(b.install or '')}</code></p>")
        return "\n".join(out)
    if b.error:
        out.append(f"<pre>{html.escape(b.error)}</pre>")
    lines = markdown.evidence_lines(b)
    if lines:
        out.append("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in lines) + "</ul>")
    if b.cause and b.verdict is not Verdict.ERROR:
        out.append(f"<p><strong>Cause:</strong> {_inline(b.cause)}</p>")
    if b.advice:
        out.append(f"<p><strong>Fix:</strong> {_inline(b.advice)}</p>")
    if b.blocked_by:
        out.append("<ul>" + "".join(f"<li>who blocked: {_inline(markdown.blocked_line(s))}</li>"
                                    for s in b.blocked_by) + "</ul>")
    if b.routes:
        headers, rows, right, _ = markdown.table_data(markdown.route_table(b.routes))
        badges = {(r, 1): _badge(x.verdict) for r, x in enumerate(b.routes)}
        out.append(_table(headers, rows, numeric=right, cell_html=badges))
        for r in b.routes:
            if r.verdict is Verdict.OK:
                continue
            items = [e.text for e in r.evidence if e.fired]
            items += [f"Cause: {r.cause}"] if r.cause else []
            items += [f"Fix: {r.advice}"] if r.advice else []
            items += [f"First error: `{r.first_error}`"] if r.first_error else []
            items += [f"who blocked: {markdown.blocked_line(s)}" for s in r.blocked_by]
            out.append(f"<p><strong>{html.escape(r.route)}</strong>: {_badge(r.verdict)}</p>"
                       + "<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in items) + "</ul>")
    if b.worker_timeouts:
        out.append(f"<p>gunicorn killed {b.worker_timeouts} worker(s) whose hub was blocked "
                   "(<code>WORKER TIMEOUT</code>).</p>")
    return "\n".join(out)


def render(result: RunResult) -> str:
    """The whole report as one HTML document."""
    faults = any(b.verdict in (Verdict.BLOCKING, Verdict.BUSY_WAIT, Verdict.ERROR)
                 and not b.baseline for b in result.builds) or result.exit_code != 0
    body = ["<h1>geventprobe: PostgreSQL drivers under gunicorn -k gevent</h1>",
            f'<p class="verdict {"bad" if faults else "good"}">'
            f"{_inline(markdown.verdict_paragraph(result))}</p>"]
    if result.builds:
        headers, rows, right, dim = markdown.table_data(markdown.verdict_table(result))
        v = headers.index("verdict")
        badges = {(r, v): _badge(b.verdict, rows[r][v]) for r, b in enumerate(result.builds)}
        body += [_table(headers, rows, numeric=right, cell_html=badges, dim=dim),
                 f'<p class="legend">{_inline(markdown.table_legend(result))}</p>']
        if result.proxy is not None:
            body.append(f"<p><code>--rtt</code>: {_inline(markdown.proxy_line(result.proxy))}"
                        ".</p>")
        connect = markdown.connect_rows(result)
        if connect:
            body += ["<h2>Connect phase</h2>", _table(*connect, numeric=range(1, 6))]
        body += ["<h2>Charts</h2>", _charts(result)]
        details = [b for b in result.builds if markdown.details_wanted(b)]
        if details:
            body += ["<h2>Causes and fixes</h2>"] + [_build_details(b) for b in details]
        body.append("<details><summary>Per-worker figures</summary>")
        for b in result.builds:
            if b.workers:
                headers, rows = markdown.worker_rows(b)
                body += [f"<h3>{html.escape(markdown.label(b))}</h3>",
                         _table(headers, rows, numeric=range(1, 8))]
        body.append("</details>")
        if markdown.timing_lines(result):
            body += ["<details><summary>Where the time went</summary><ul>"
                     + "".join(f"<li>{_inline(x)}</li>" for x in markdown.timing_lines(result))
                     + "</ul></details>"]
    body += ["<h2>Calibration</h2>", f"<p>{_inline(markdown.calibration_status(result))}</p>"]
    cal = markdown.calibration_rows(result)
    if cal:
        body.append(_table(*cal, numeric=range(4, 9)))
    if result.notes:
        body += ["<h2>Notes</h2>",
                 "<ul>" + "".join(f"<li>{_inline(n)}</li>" for n in result.notes) + "</ul>"]
    headers, rows = markdown.worker_fact_rows(result)
    if rows:
        body += ["<h2>Environment inside the workers</h2>",
                 "<p>What each build's gunicorn gevent workers reported about themselves, after "
                 "the worker had booted.</p>", _table(headers, rows)]
    if markdown.app_rows(result):
        body += ["<h2>App under test</h2>", _pairs(markdown.app_rows(result))]
    envs = markdown.matrix_rows(result)
    if envs:
        body += ["<h2>Version matrix</h2>", _table(*envs, numeric=(5,))]
    body += ["<h2>PostgreSQL server</h2>", _pairs(markdown.server_rows(result)),
             "<h2>Machine</h2>", _pairs(markdown.machine_rows(result)),
             "<h2>Command and configuration</h2>",
             f"<pre><code>{html.escape(markdown.command_line(result))}</code></pre>",
             f"<pre><code>{html.escape(markdown.profile_toml(result))}</code></pre>"]
    scripts = markdown.reproducible(result)
    if scripts:
        body += ["<h2>Reproduction</h2>",
                 "<p>Each script rebuilds one build's setup in a single process, without "
                 "gunicorn or geventprobe, runs the same concurrent <code>pg_sleep</code> "
                 "greenlets beside a ticker and prints whether the sleeps were serialised. "
                 "Pass the DSN as its argument or in <code>$DSN</code>.</p>"]
        for b in scripts:
            body.append(f"<details><summary><code>{html.escape(markdown.script_name(b))}</code>: "
                        f"{_badge(b.verdict)}</summary><pre><code>"
                        f"{html.escape(repro.script(b, result))}</code></pre></details>")
    body.append(f"<footer><hr>{_inline(markdown.footer(result))}</footer>")
    title = html.escape(f"geventprobe report: {result.summary}")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{title}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def write(result: RunResult, path: str) -> None:
    """Write the report to ``path`` (write then rename)."""
    text = render(result)
    try:
        write_atomic(path, text)
    except OSError as exc:
        raise ProbeError(f"cannot write {path} ({exc.strerror}): choose another -o PATH") from exc
