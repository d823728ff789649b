"""What every command shares: one-line errors with exit codes, signals, progress, consoles."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
from collections.abc import Iterator

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from geventprobe.errors import EXIT_INTERRUPTED, EXIT_USAGE, ProbeError
from geventprobe.model import BuildResult


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so every context manager cleans up."""


def _on_sigterm(signum, frame):
    raise Terminated()


def fail(message: str, code: int = EXIT_USAGE) -> None:
    """Print one line on stderr and exit with ``code``."""
    click.echo(f"geventprobe: error: {message}", err=True)
    sys.exit(code)


@contextlib.contextmanager
def handled_errors(debug: bool) -> Iterator[None]:
    """Turn every failure into one line and its exit code; tracebacks only with --debug."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    except ProbeError as exc:
        if debug:
            traceback.print_exc()
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted: every process and temp dir it started was cleaned up",
             EXIT_INTERRUPTED)
    except Terminated:
        fail("terminated by SIGTERM: every process and temp dir it started was cleaned up")
    except Exception as exc:
        if debug:
            raise
        fail(f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the "
             "traceback, and please report it)")
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_writable(path: str | None, flag: str) -> None:
    """Refuse an output path we will not be able to write, before spending a run on it."""
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ProbeError(f"cannot write {flag} {path}: {folder} is not a writable directory")


def report_console() -> Console:
    """Where reports go: stdout; CI logs are not terminals, so give tables room there."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def progress_console() -> Console:
    """Where progress and errors go: stderr."""
    return Console(stderr=True, highlight=False)


class ProgressListener:
    """Draws progress on stderr: a live bar on a terminal, plain lines otherwise."""

    def __init__(self, console: Console, total: int, unit: str = "builds"):
        self.console = console
        self.live = console.is_terminal
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.total} " + unit),
                                 TimeElapsedColumn(), console=console, transient=True)
        self.task = self.progress.add_task("starting", total=total)

    def __enter__(self) -> ProgressListener:
        if self.live:
            self.progress.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.live:
            self.progress.stop()

    def _line(self, text: str) -> None:
        if self.live:
            self.progress.console.print(f"  {text}")
        else:
            self.console.print(f"geventprobe: {text}")

    def phase(self, text: str) -> None:
        """A step of the run started."""
        if self.live:
            self.progress.update(self.task, description=text)
        else:
            self._line(text)

    def build_started(self, build: str, index: int, total: int) -> None:
        """gunicorn for ``build`` is starting."""
        self.phase(f"{build}: gunicorn -k gevent, probing every worker")

    def build_finished(self, result: BuildResult) -> None:
        """``build`` has its verdict."""
        self.progress.advance(self.task)
        line = f"{result.build}: {result.verdict}"
        if result.duration_s:
            line += f" ({result.duration_s:.1f} s)"
        self._line(line)
