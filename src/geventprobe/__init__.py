"""geventprobe: does your PostgreSQL driver block or busy-wait under gunicorn + gevent?

Kept import-free on purpose: gunicorn loads ``geventprobe.worker`` in the
master, and nothing there may import a driver or patch anything by accident. The Python
API (``probe_drivers``, ``probe_app``, ``probe_celery``, ``probe_uwsgi``, ``ProbeError``,
``RunResult``, ``Verdict``) is imported on first use, by ``__getattr__``.
"""

__version__ = "0.1.0"

_API = {"probe_drivers": "geventprobe.api", "probe_app": "geventprobe.api",
        "probe_celery": "geventprobe.api", "probe_uwsgi": "geventprobe.api",
        "ProbeError": "geventprobe.errors",
        "RunResult": "geventprobe.record", "Verdict": "geventprobe.record"}
"""The Python API (docs/pytest.md), imported on first use: ``geventprobe.probe_app(...)``."""

__all__ = ["ProbeError", "RunResult", "Verdict", "__version__", "probe_app", "probe_celery",
           "probe_drivers", "probe_uwsgi"]


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'geventprobe' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
