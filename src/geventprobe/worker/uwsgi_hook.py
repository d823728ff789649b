"""The probe's way into uWSGI's gevent workers (``import = geventprobe.worker.uwsgi_hook``).

uWSGI imports this in its master before it loads the app (measured with pyuwsgi 2.0.30:
the ``import`` option runs after the python plugin starts and before ``module`` is loaded;
docs/uwsgi.md). It starts ``import_watch`` first, so who imports the driver, and whether
gevent had patched then, is seen from the start; then it registers a post-fork function
(``uwsgidecorators.postfork``, which chains with the app's own). In each worker that
function runs before the gevent loop engine starts (and before ``--gevent-monkey-patch``
patches): it only spawns the probe's greenlet, which runs once the loop runs, when the
worker is patched and serves, as gunicorn's ``post_worker_init`` would have it.
"""

from __future__ import annotations

from geventprobe.worker import import_watch as _watch

_watch.install()

import os  # noqa: E402

import uwsgi  # noqa: E402
from uwsgidecorators import postfork  # noqa: E402

# With lazy-apps uWSGI imports this in each worker, after the fork, as it loads the app
# there (measured: the post-fork functions have run by then, so ours would never run).
_IN_WORKER = uwsgi.worker_id() > 0
_watch.set_phase("uwsgi-worker" if _IN_WORKER else "uwsgi-master")


class _Worker:
    """What ``probe.run`` asks of a worker: its listening socket, for the probe's route."""

    def __init__(self):
        import socket

        fd = uwsgi.sockets[0] if uwsgi.sockets else None
        self.sockets = [socket.socket(fileno=os.dup(fd))] if fd is not None else []


class _UwsgiApp:
    """The user's app under uWSGI (``probe``'s source): who imported the driver, when, and
    the uWSGI options that decide it."""

    def import_facts(self, worker=None) -> dict:
        """How the driver got imported, and uWSGI's own words for the deployment."""
        lazy = bool(_option("lazy-apps") or _option("lazy"))
        out = _watch.facts(not lazy)
        # The report's row of it names gunicorn's master: "driver imported" says where.
        out["driver_imported_in_master"] = None
        out.update(
            build=os.environ.get("GEVENTPROBE_BUILD", "app"), import_error=None, mode="app",
            preload=not lazy, gunicorn=None,
            worker_class=f"uWSGI gevent loop ({_option('gevent')} cores)",
            uwsgi={"version": _text(uwsgi.version),
                   "gevent": _option("gevent"),
                   "monkey_patch": bool(_option("gevent-monkey-patch")),
                   "early_monkey_patch": bool(_option("gevent-early-monkey-patch")),
                   "lazy_apps": lazy,
                   "enable_threads": bool(_option("enable-threads")),
                   "processes": _option("processes") or _option("workers")})
        return out

    def driver(self):
        """(driver module, import error): whatever the user's app uses."""
        module, _, error = _watch.driver_module()
        return module, error

    def set_up(self) -> None:
        """Nothing: the user's app and options have set everything up already."""


def _text(value) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _option(name: str):
    """One of uWSGI's options as the worker runs with it (the last value when repeated)."""
    value = uwsgi.opt.get(name)
    if isinstance(value, list):
        value = value[-1] if value else None
    value = _text(value)
    return True if value == "true" else value


def _start() -> None:
    """In each worker, before the loop engine runs: the probe's greenlet, run once it does."""
    import gevent

    from geventprobe.worker import probe

    gevent.spawn(probe.run, _UwsgiApp(), _Worker())


if _IN_WORKER:
    _start()
else:
    postfork(_start)
