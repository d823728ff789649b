"""Progress: the core never prints; it tells a listener (the CLI draws it)."""

from __future__ import annotations

from typing import Protocol

from geventprobe.record import BuildResult


class Listener(Protocol):
    """Receives progress; the core never prints."""

    def phase(self, text: str) -> None:
        """A step of the run started."""

    def build_started(self, build: str, index: int, total: int) -> None:
        """The workers of row ``build`` are starting."""

    def build_finished(self, result: BuildResult) -> None:
        """A row has its verdict."""


class NullListener:
    """A listener that ignores everything."""

    def phase(self, text: str) -> None:
        pass

    def build_started(self, build: str, index: int, total: int) -> None:
        pass

    def build_finished(self, result: BuildResult) -> None:
        pass
