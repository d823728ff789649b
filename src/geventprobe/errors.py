"""Errors the CLI turns into one line and a documented exit code."""

from __future__ import annotations

import signal

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_INCONCLUSIVE = 3
EXIT_INTERRUPTED = 130


class ProbeError(Exception):
    """A problem the user can fix: bad input or an environment that cannot run the probe.

    ``str(error)`` is the one line shown: it names the problem and the fix.
    """

    exit_code = EXIT_USAGE


class Terminated(BaseException):
    """SIGTERM or SIGHUP, raised in the main thread so every context manager cleans up.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` on the
    way out swallows it.
    """

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        """``SIGTERM`` or ``SIGHUP``."""
        return signal.Signals(self.signum).name
