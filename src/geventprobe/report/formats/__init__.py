"""The report formats: one module per format, each a ``Format`` (``interface``).

``terminal`` (a console, its width, colour), ``text`` (plain, 100 columns), ``markdown``
(a GitHub issue attachment, the job summary) and ``html`` (one self-contained page with
the charts). ``console`` is the drawing the terminal and text share (fitting tables to a
width, wrapping), not a format. The JSON form is the record itself (``report.json_format``),
not a document, and the PNG is the document's charts (``report.charts``).
"""

from __future__ import annotations

from geventprobe.report.formats.html import Html
from geventprobe.report.formats.interface import Format
from geventprobe.report.formats.markdown import Markdown
from geventprobe.report.formats.terminal import Terminal
from geventprobe.report.formats.text import Text

FORMATS: dict[str, type[Format]] = {f.name: f for f in (Markdown, Text, Html)}
"""The document formats ``report --format`` writes to a file (the terminal draws on a console)."""

__all__ = ["FORMATS", "Format", "Html", "Markdown", "Terminal", "Text"]
