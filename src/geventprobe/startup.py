"""The first thing the entry point runs, before the command line's (slow) imports.

Importing click, rich and the commands takes a few hundred ms. Two things cannot wait
that long:

- a password typed in ``--dsn`` is in our process title (``ps``, ``/proc/<pid>/cmdline``,
  readable by every user of the machine) from the moment Python starts: ``begin`` rewrites
  the title without it at once (``benchmarks/proctitle.py``: visible 311–524 ms after the
  start when the title was rewritten after those imports, 37–60 ms now, most of it
  Python's own start-up);
- a Ctrl-C in that time would end in a ``KeyboardInterrupt`` traceback: nothing has been
  started yet, so the handler just says so and exits 130. ``handled_errors`` installs
  the real handling once a command runs.

Only the standard library and ``geventprobe.dsn`` (itself standard library only) here.
"""

from __future__ import annotations

import os
import signal
import sys

MESSAGE = "geventprobe: error: interrupted (Ctrl-C) before anything started\n"


def _interrupted(signum, frame):
    sys.stderr.write(MESSAGE)
    sys.stderr.flush()
    # Not SystemExit: raised from a signal handler it lands in whatever code the import
    # was running, which may wrap it (Python 3.11 turns an exception inside a class's
    # ``__set_name__``, e.g. a dataclass being built, into a RuntimeError: a traceback
    # and exit 1, seen once in the suite). Nothing has been started yet: nothing to clean.
    os._exit(130)


def quiet_early_interrupt() -> None:
    """Make a Ctrl-C before a command's own handling one line and exit 130 (main thread only,
    and only where Python's default handler is still in place)."""
    try:
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, _interrupted)
    except ValueError:  # not the main thread: leave the host program's handling alone
        pass


def started_as_program() -> bool:
    """True when the ``geventprobe`` console script is what runs (not an import in tests)."""
    return bool(sys.argv) and os.path.basename(sys.argv[0]) == "geventprobe"


def _title_functions():
    """setproctitle's (getproctitle, setproctitle), or None when it is not installed.

    Its C module is loaded directly: the package's ``__init__`` imports ``logging`` first,
    which alone keeps the password in ``ps`` for another ~10 ms.
    """
    try:
        import importlib.machinery
        import importlib.util

        spec = importlib.util.find_spec("setproctitle")
        folder = (spec.submodule_search_locations or [None])[0] if spec else None
        if folder:
            for name in sorted(os.listdir(folder)):
                if name.startswith("_setproctitle.") and name.endswith(
                        tuple(importlib.machinery.EXTENSION_SUFFIXES)):
                    c_spec = importlib.util.spec_from_file_location(
                        "setproctitle._setproctitle", os.path.join(folder, name))
                    module = importlib.util.module_from_spec(c_spec)
                    c_spec.loader.exec_module(module)
                    sys.modules.setdefault("setproctitle._setproctitle", module)
                    return module.getproctitle, module.setproctitle
    except (ImportError, OSError, AttributeError):
        pass
    try:  # whatever its layout: the package as it is meant to be imported
        import setproctitle
    except ImportError:  # a dependency, but a broken install must not stop a run
        return None
    return setproctitle.getproctitle, setproctitle.setproctitle


def hide_password_in_title(argv: list[str] | None = None) -> bool:
    """Rewrite our own process title without any password; True when it held one.

    The ``--dsn`` value's password becomes a known secret (``dsn.remember``), masked
    wherever it appears from then on; the title is then redacted like any output.
    """
    from geventprobe import dsn

    argv = sys.argv if argv is None else argv
    for i, arg in enumerate(argv):
        for flag in ("--dsn", "--broker"):  # a celery broker URL may hold a password too
            if arg == flag and i + 1 < len(argv):
                dsn.remember(argv[i + 1])
            elif arg.startswith(flag + "="):
                dsn.remember(arg[len(flag) + 1:])
    functions = _title_functions()
    if functions is None:
        return False
    get, set_title = functions
    title = get()
    clean = dsn.redact(title)
    if clean == title:
        return False
    set_title(clean)
    return True


def begin() -> None:
    """The entry point's first step: the password out of ``ps``, then a quiet Ctrl-C."""
    hide_password_in_title()
    quiet_early_interrupt()
