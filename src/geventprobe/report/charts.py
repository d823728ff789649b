"""Charts of a run, as one PNG: per build, hub lag over time and the SELECT 1 latency spread.

Draws a document's ``Charts`` block (``report.run`` picks the builds and the limit): the
HTML format embeds it, ``report --format png`` writes it alone.

One row per build, all rows on shared axes so builds compare at a glance: on
the left each worker's hub lag during the wait windows (log scale, with the
BLOCKING limit drawn), on the right the distribution of ``SELECT 1`` latency
recorded inside the greenlets (log buckets, p50 and p99 marked). matplotlib is
an optional extra (``pip install "geventprobe[charts]"``); without it
``ChartsUnavailable`` says how to get it. Drawn on matplotlib's object API
with the Agg canvas: no pyplot global state, no display needed.
"""

from __future__ import annotations

import importlib.util
import io

from geventprobe.errors import ProbeError
from geventprobe.record import BuildResult, Verdict
from geventprobe.report.cells import label
from geventprobe.report.document import Charts

INSTALL_HINT = 'pip install "geventprobe[charts]"'
_COLOURS = {
    Verdict.OK: "#2e7d32",
    Verdict.BLOCKING: "#c62828",
    Verdict.BUSY_WAIT: "#8e24aa",
    Verdict.ERROR: "#ef6c00",
    Verdict.UNAVAILABLE: "#9e9e9e",
}
# Lags below this are drawn at this value: a log axis has no zero.
_LAG_FLOOR_MS = 0.01
_BUCKET_RATIO = 2 ** (1 / 8)  # stats.histogram's buckets: eight per power of two


class ChartsUnavailable(ProbeError):
    """matplotlib is not installed; the message says how to install it."""


def available() -> bool:
    """True when matplotlib can be imported."""
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        return False


def _lag_panel(ax, b: BuildResult, limit_ms: float | None) -> None:
    colour = _COLOURS[b.verdict]
    for i, w in enumerate(b.workers):
        if not w.hub_lag_timeline:
            continue
        t = [p[0] for p in w.hub_lag_timeline]
        lag = [max(p[1], _LAG_FLOOR_MS) for p in w.hub_lag_timeline]
        # A tick due at t and late by lag means the hub was stuck until t + lag: draw the
        # last stall to its end too, not as a sliver.
        t.append(t[-1] + max(lag[-1] / 1000, 0.01))
        lag.append(lag[-1])
        ax.step(t, lag, where="post", color=colour, alpha=0.9 if i == 0 else 0.5, linewidth=1.2,
                label=f"worker {w.pid}")
    if limit_ms:
        ax.axhline(limit_ms, color="#c62828", linestyle="--", linewidth=0.9)
        ax.annotate(f"BLOCKING limit {limit_ms:g} ms", xy=(1, limit_ms),
                    xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize=7,
                    color="#c62828")
    ax.set_yscale("log")
    ax.set_ylabel("hub lag ms")
    ax.grid(True, which="major", alpha=0.3)
    m = b.metrics
    title = f"{label(b)}: {b.verdict.value}   wait× {m.wait_factor:.2f} · max lag " \
            f"{m.max_hub_lag_ms:,.0f} ms"
    if m.cpu_during_waits is not None:  # the BUSY-WAIT evidence has no curve of its own
        title += f" · CPU {m.cpu_during_waits:.2f} s/s in waits"
    ax.set_title(title, loc="left", fontsize=9, color=colour, fontweight="bold")


def _latency_panel(ax, b: BuildResult) -> None:
    m = b.metrics
    colour = _COLOURS[b.verdict]
    hist = {float(k): v for k, v in m.latency_histogram.items()}
    total = sum(hist.values())
    if total:
        lows = sorted(hist)
        ax.bar([max(x, 1.0) for x in lows], [hist[x] / total * 100 for x in lows],
               width=[max(x, 1.0) * (_BUCKET_RATIO - 1) for x in lows], align="edge",
               color=colour, alpha=0.75)
    for value, name in ((m.select1.p50_us, "p50"), (m.select1.p99_us, "p99")):
        if value:
            ax.axvline(value, color="#424242", linestyle=":", linewidth=0.9)
            ax.annotate(f"{name} {value:,.0f}", xy=(value, 1), xycoords=("data", "axes fraction"),
                        ha="left", va="top", fontsize=7, color="#424242", rotation=90)
    ax.set_xscale("log")
    ax.set_ylabel("% of queries")
    ax.grid(True, which="major", alpha=0.3)
    title = f"SELECT 1: {m.select1.count:,} queries, {m.select1_qps:,.0f} q/s"
    if b.verdict is Verdict.BLOCKING:
        title += " (looks fast: one query at a time)"
    ax.set_title(title, loc="left", fontsize=9)


def render_png(charts: Charts, dpi: int = 100) -> bytes:
    """The charts as PNG bytes; ``ChartsUnavailable`` without matplotlib."""
    if not available():
        raise ChartsUnavailable(f"charts need matplotlib: {INSTALL_HINT}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    builds = charts.builds
    if not builds:
        raise ProbeError("no build of this run has figures to chart (every build was "
                         "UNAVAILABLE or failed)")
    fraction = charts.blocking_fraction
    height = 1.0 + 2.3 * len(builds)
    fig = Figure(figsize=(13, height), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(builds), 2, squeeze=False, sharex="col", sharey="col")
    # Fixed margins in inches: matplotlib's constrained layout would double the drawing time.
    fig.subplots_adjust(left=0.06, right=0.99, top=1 - 0.7 / height, bottom=0.5 / height,
                        hspace=0.45, wspace=0.16)
    for row, b in zip(axes, builds):
        limit = fraction * b.metrics.wait_seconds * 1000 if fraction else None
        _lag_panel(row[0], b, limit)
        _latency_panel(row[1], b)
    axes[-1][0].set_xlabel("seconds since the first wait window opened "
                           "(each line: one worker, worst tick per 10 ms)")
    axes[-1][1].set_xlabel("SELECT 1 latency µs, measured inside the greenlets (log buckets)")
    m = builds[0].metrics
    fig.suptitle(f"geventprobe: hub lag during {m.wait_rounds} windows of {m.greenlets} "
                 f"concurrent pg_sleep({m.wait_seconds:g}), and SELECT 1 latency  "
                 f"({m.workers} workers × {m.greenlets} greenlets, {charts.started_at})",
                 fontsize=10)
    out = io.BytesIO()
    # No software/date stamp: the same record gives the same bytes.
    fig.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()
