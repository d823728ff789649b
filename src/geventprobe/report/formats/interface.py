"""What every report format is: one class with one method, syntax only.

A format turns a ``Document`` (``report.document``) into text. It decides how a table,
a paragraph, a heading... are written, never what they say: the content was computed
once, from the record, before any format saw it. A new format is one class here, added
to ``formats.FORMATS``; no format imports another.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from geventprobe.report.document import Document


class Format(ABC):
    """One output format."""

    name: str
    """What ``--format`` calls it."""

    @abstractmethod
    def render(self, doc: Document, verbose: bool = False) -> str:
        """The whole document in this format (``verbose``: the ``-v`` view, for the formats
        that have a short one; the reference formats always show everything)."""
