"""Facts about the machine and installed packages, as the parent process sees them."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

import psutil

from geventprobe import __version__

PACKAGES = ("psycopg", "psycopg-binary", "psycopg-c", "psycopg2-binary", "psycopg2",
            "psycogreen", "gevent", "greenlet", "gunicorn", "psutil")


def installed_versions() -> dict[str, str | None]:
    """Distribution versions, read from metadata without importing anything."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def collect() -> dict:
    """Python, OS, kernel, CPUs, memory, load and package versions."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "geventprobe": __version__,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "executable": sys.executable,
        "os": platform.platform(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu_count": psutil.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average": [round(x, 2) for x in load] if load else None,
        "packages": installed_versions(),
    }
