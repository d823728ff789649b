"""Time to render a saved run in each report format (no probe runs).

Loads a recorded result (default: tests/data/run-preload-http.json, 5 builds,
2 workers × 8 greenlets) and renders it R times (default 5) per format, in this
process, printing min / median / max. The charts (png, and html which embeds
them) dominate: matplotlib draws ten panels.

    .venv/bin/python benchmarks/report_render.py [--runs 5] [RESULT.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import psutil

from geventprobe.report import charts, json_format, load, run
from geventprobe.report.document import Charts
from geventprobe.report.formats import Html, Markdown, Text

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = os.path.join(HERE, "..", "tests", "data", "run-preload-http.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("result", nargs="?", default=DEFAULT)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {psutil.cpu_count()} cores, "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.platform()}, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}")
    t = time.perf_counter()
    result = load.load(args.result)
    print(f"load: {(time.perf_counter() - t) * 1000:.1f} ms ({len(result.builds)} builds)")
    def png(r):
        return charts.render_png(next(b for b in run.document(r).body
                                      if isinstance(b, Charts)))

    # Each format from the record, as `geventprobe report` does: the document, then syntax.
    formats = {"document": run.document,
               "markdown": lambda r: Markdown().render(run.document(r)),
               "text": lambda r: Text().render(run.document(r)), "json": json_format.render,
               "html": lambda r: Html().render(run.document(r)), "png": png}
    png(result)  # first use loads matplotlib and its fonts: not what we time
    for name, render in formats.items():
        times, size = [], 0
        for _ in range(args.runs):
            t = time.perf_counter()
            out = render(result)
            times.append(time.perf_counter() - t)
            size = len(out) if isinstance(out, bytes) else len(out.encode()) \
                if isinstance(out, str) else 0
        print(f"{name:9} {min(times) * 1000:8.1f} / {statistics.median(times) * 1000:8.1f} / "
              f"{max(times) * 1000:8.1f} ms (min / median / max), {size / 1024:,.0f} KiB")


if __name__ == "__main__":
    main()
