"""Writing output files so that a reader (or a later failure) never sees half of one."""

from __future__ import annotations

import os


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` to ``path.tmp``, then rename it over ``path``."""
    tmp = f"{os.fspath(path)}.tmp"
    if isinstance(data, bytes):
        with open(tmp, "wb") as f:
            f.write(data)
    else:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(data)
    os.replace(tmp, path)
