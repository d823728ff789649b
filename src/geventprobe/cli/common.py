"""What every command shares: one-line errors with exit codes, signals, progress, consoles.

Signals: SIGINT raises KeyboardInterrupt and SIGTERM/SIGHUP raise ``Terminated``
in the main thread, so every context manager on the way out stops what it
started; a signal that lands while a child is being started or stopped is held
until that step is over (``children.shielded``). Once the first signal is being
handled, later ones do not interrupt the cleanup: they only make it kill
children at once instead of waiting for them to stop politely. Whatever a
context manager did not get to, ``children.cleanup()`` stops and removes last.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import textwrap
import traceback
from collections.abc import Iterator

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Column

from geventprobe import files
from geventprobe.dsn import foreign_scheme, redact, remember
from geventprobe.errors import EXIT_INTERRUPTED, EXIT_USAGE, ProbeError, Terminated
from geventprobe.processes import children
from geventprobe.processes.delay_proxy import MAX_RTT_MS
from geventprobe.record import BuildResult

__all__ = [
    "OneLineErrorsGroup",
    "ProgressListener",
    "Terminated",
    "check_writable",
    "debug_option",
    "dsn_option",
    "fail",
    "handled_errors",
    "progress_console",
    "report_console",
    "rtt_option",
    "say",
    "verbose_option",
    "warn_secret_argv",
]

REPORT_WIDTH = 100
"""Columns of a report that goes to a pipe or a file (a CI log): the same every time."""


def _given_broker(ctx, param, value):
    """A broker URL's password is masked wherever it appears from now on (``--broker``)."""
    if value is not None and not value.strip():
        raise click.BadParameter("the broker URL is empty: give your broker's URL, or leave "
                                 "--broker out to use a throwaway redis-server",
                                 ctx=ctx, param=param)
    if value:
        remember(value)
    return value


def _given_dsn(ctx, param, value):
    """An empty DSN is refused: ``--dsn "$DATABASE_URL"`` with the variable unset must not
    quietly probe the embedded server instead of the user's."""
    if value is not None and not value.strip():
        raise click.BadParameter("the DSN is empty: give your server's DSN, or leave --dsn "
                                 "out (and GEVENTPROBE_DSN unset) to use an embedded server",
                                 ctx=ctx, param=param)
    if value:
        remember(value)  # masked wherever it appears, free text included
    scheme = foreign_scheme(value) if value else None
    if scheme:
        hint = (" (SQLAlchemy's driver suffix: drop it)" if scheme.lower().startswith(
            ("postgresql+", "postgres+")) else "")
        raise click.BadParameter(f"{scheme}:// is not a PostgreSQL URL{hint}: give a "
                                 "postgresql:// URI or libpq key=value pairs", ctx=ctx,
                                 param=param)
    return value


# Options every probing command shares, defined once so they cannot drift apart.
dsn_option = click.option(
    "--dsn", envvar="GEVENTPROBE_DSN", default=None, metavar="DSN", callback=_given_dsn,
    help="Your PostgreSQL (libpq conninfo or URI; env GEVENTPROBE_DSN keeps it out of ps). "
         "Default: PG* environment if set, else an embedded throwaway server.")
debug_option = click.option("--debug", is_flag=True, help="Show tracebacks.")
verbose_option = click.option(
    "-v", "--verbose", is_flag=True,
    help="Every figure, the legend and where the time went, whatever the terminal's width.")


def _finite(ctx, param, value):
    # FloatRange lets "nan" through (every comparison with it is false).
    if value is not None and value != value:
        raise click.BadParameter(f"{value!r} is not a number of milliseconds", ctx, param)
    return value


rtt_option = click.option(
    "--rtt", "rtt_ms", type=click.FloatRange(min=0, max=MAX_RTT_MS), default=None,
    metavar="MS", callback=_finite,
    help="Simulate a server this many ms away (round trip): the workers reach it through a "
         "loopback proxy delaying each direction by MS/2 (~1 same zone, 20-80 across "
         "regions; 0: direct) [profile: 0].")

CLEANED = "every process and temp dir it started was stopped and removed"
_HANDLED_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None))
                         if s is not None)
_signalled = False
_cleaning = False


def _on_signal(signum, frame):
    global _signalled
    if _signalled or _cleaning:
        children.hurry()  # a second Ctrl-C: stop the children now, do not wait for them
        return
    _signalled = True
    children.deliver(KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum))


def _terminal_width(stream) -> int | None:
    """The width of the terminal ``stream`` writes to; None for a pipe or a file."""
    try:
        if stream.isatty():
            return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        pass
    return None


def say(text: str, *, err: bool = True) -> None:
    """One message of geventprobe's own (a warning, an error, ``wrote PATH``): one line in a
    pipe or a file (a log, a test, ``grep``), wrapped at the terminal's width on a terminal,
    later lines indented, no word cut (a path stays whole)."""
    text = " ".join(text.split())
    width = _terminal_width(sys.stderr if err else sys.stdout)
    if width and len(text) > width:
        text = "\n".join(textwrap.wrap(text, width, subsequent_indent="  ",
                                       break_long_words=False, break_on_hyphens=False))
    click.echo(text, err=err)


def fail(message: str, code: int = EXIT_USAGE) -> None:
    """Print the one message on stderr and exit with ``code``."""
    say(f"geventprobe: error: {message}")
    sys.exit(code)


def _outcome(exc: BaseException, debug: bool) -> tuple[str, int]:
    """The one line and the exit code for what ended a command."""
    if debug:
        # Redacted like every other output: a chained driver error may quote the DSN.
        sys.stderr.write(redact("".join(
            traceback.format_exception(type(exc), exc, exc.__traceback__))))
        sys.stderr.flush()
    if isinstance(exc, ProbeError):
        return str(exc), exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return f"interrupted (Ctrl-C): {CLEANED}", EXIT_INTERRUPTED
    if isinstance(exc, Terminated):
        return f"terminated by {exc.name}: {CLEANED}", EXIT_USAGE
    return (f"internal error: {type(exc).__name__}: {redact(str(exc))} (rerun with --debug "
            "for the traceback, and please report it)", EXIT_USAGE)


@contextlib.contextmanager
def handled_errors(debug: bool) -> Iterator[None]:
    """Turn every failure into one line and its exit code; tracebacks only with --debug.

    Also owns the signals for the block, and sweeps up (``children.cleanup``) whatever the
    block's own context managers did not stop or remove, however it ends.
    """
    global _signalled, _cleaning
    _signalled = _cleaning = False
    children.hurry(False)
    previous = {s: signal.signal(s, _on_signal) for s in _HANDLED_SIGNALS}
    outcome = None
    try:
        yield
    except (Exception, KeyboardInterrupt, Terminated) as exc:
        outcome = _outcome(exc, debug)
    finally:
        _cleaning = True
        with contextlib.suppress(ProbeError, OSError):
            children.cleanup()
        for s, handler in previous.items():
            signal.signal(s, handler)
    for notice in children.take_notices():  # a run that ended without a report to carry it
        say(f"geventprobe: warning: {notice}")
    if outcome is not None:
        fail(*outcome)


def warn_secret_argv(dsn: str | None, param: str = "dsn",
                     instead: str = "GEVENTPROBE_DSN, PGPASSWORD or ~/.pgpass") -> None:
    """Say so when a password was given on our command line, where ``ps`` shows it
    (``--dsn``, or ``param``: ``--broker``)."""
    ctx = click.get_current_context(silent=True)
    if not dsn or ctx is None or redact(dsn) == dsn:
        return
    source = ctx.get_parameter_source(param)
    if source is click.core.ParameterSource.COMMANDLINE:
        say(f"geventprobe: warning: the password in --{param} was visible to every user of this "
            "machine (ps) until geventprobe rewrote its own process title, and it stays in "
            f"your shell history: pass it in {instead} instead "
            "(geventprobe never puts it on a command line)")


class OneLineErrorsGroup(click.Group):
    """A click group whose errors are one line and exit 2 (click's own are three lines:
    usage, hint, error), like every other bad input."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        no_args_help = getattr(click.exceptions, "NoArgsIsHelpError", ())
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except no_args_help as exc:  # plain `geventprobe`: the help is the answer
            exc.show()
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            path = exc.ctx.command_path if exc.ctx is not None else "geventprobe"
            fail(f"{exc.format_message()} (see {path} --help)", EXIT_USAGE)
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            fail("interrupted (Ctrl-C) before anything started", EXIT_INTERRUPTED)
        sys.exit(rv if isinstance(rv, int) else 0)


def check_writable(path: str | None, flag: str) -> None:
    """Refuse an output path we will not be able to write, before spending a run on it."""
    files.check_writable(path, flag)


def report_console() -> Console:
    """Where reports go: stdout, at the terminal's width, or ``REPORT_WIDTH`` when piped.

    The renderer fits its tables to that width (``report.terminal``), so a CI log reads the
    same on every run and an 80-column terminal cuts nothing.
    """
    return Console(highlight=False, width=None if sys.stdout.isatty() else REPORT_WIDTH)


def progress_console() -> Console:
    """Where progress and errors go: stderr."""
    return Console(stderr=True, highlight=False)


class ProgressListener:
    """Draws progress on stderr: a live bar on a terminal, plain lines otherwise."""

    def __init__(self, console: Console, total: int, unit: str = "builds"):
        self.console = console
        self.live = console.is_terminal
        # A narrow terminal gets a short bar, and a long step folds instead of ending in "…".
        narrow = console.width < 120
        self.progress = Progress(SpinnerColumn(),
                                 TextColumn("{task.description}",
                                            table_column=Column(overflow="fold")),
                                 BarColumn(bar_width=10 if narrow else 40),
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
        self.phase(f"{build}: probing its gevent workers")

    def build_finished(self, result: BuildResult) -> None:
        """``build`` has its verdict."""
        self.progress.advance(self.task)
        line = f"{result.build}: {result.verdict}"
        if result.duration_s:
            line += f" ({result.duration_s:.1f} s)"
        self._line(line)
