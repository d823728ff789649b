"""The machine's shared timing lock, taken for one measurement at a time.

Long series (``accuracy.py``, ``stall_watch.py``) take ``/tmp/gp-timing.lock`` around each
run instead of holding it for the whole series, so that other timing-sensitive work on the
same machine can interleave: ``--lock PATH`` (empty: no lock).
"""

from __future__ import annotations

import contextlib
import fcntl

DEFAULT = "/tmp/gp-timing.lock"


@contextlib.contextmanager
def held(path: str | None):
    """Hold the ``flock`` on ``path`` (exclusive) for the ``with`` block; nothing if empty."""
    if not path:
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
