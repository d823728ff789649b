"""Errors the CLI turns into one line and a documented exit code."""

from __future__ import annotations

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
