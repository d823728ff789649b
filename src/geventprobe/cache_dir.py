"""geventprobe's user cache dir: what it keeps between runs.

The isolated environments of a version matrix (``versions/venvs.py``, ``envs/``) and the
embedded server's initialised cluster (``processes/postgres.py``, ``pgdata/``). Nothing in
it is needed: each entry is made again when missing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

CACHE_ENV = "GEVENTPROBE_CACHE_DIR"


def cache_root() -> Path:
    """geventprobe's user cache dir: ``$GEVENTPROBE_CACHE_DIR``, else the platform's."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    try:
        import platformdirs  # optional: it knows every platform's convention
    except ImportError:
        pass
    else:
        return Path(platformdirs.user_cache_dir("geventprobe", appauthor=False))
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "geventprobe"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "geventprobe"
