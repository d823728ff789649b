"""Before the command line's (slow) imports: a quiet Ctrl-C.

Importing click, rich and the commands takes a few hundred ms; a Ctrl-C in that
time would otherwise end in a ``KeyboardInterrupt`` traceback. Nothing has been
started yet, so the handler just says so and exits 130. ``handled_errors``
installs the real handling once a command runs. Only the standard library here.
"""

from __future__ import annotations

import os
import signal
import sys

MESSAGE = "geventprobe: error: interrupted (Ctrl-C) before anything started\n"


def _interrupted(signum, frame):
    sys.stderr.write(MESSAGE)
    sys.stderr.flush()
    raise SystemExit(130)


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
