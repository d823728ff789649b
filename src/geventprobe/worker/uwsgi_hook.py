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


def _uwsgi_facts() -> dict:
    """uWSGI's own words for the deployment: its version and the options that decide it."""
    lazy = bool(_option("lazy-apps") or _option("lazy"))
    return {"worker_class": f"uWSGI gevent loop ({_option('gevent')} cores)",
            "uwsgi": {"version": _text(uwsgi.version),
                      "gevent": _option("gevent"),
                      "monkey_patch": bool(_option("gevent-monkey-patch")),
                      "early_monkey_patch": bool(_option("gevent-early-monkey-patch")),
                      "lazy_apps": lazy,
                      "enable_threads": bool(_option("enable-threads")),
                      "processes": _option("processes") or _option("workers")}}


def _watched_facts() -> dict:
    """What ``import_watch`` saw of the driver's import, in uWSGI's words: the driver was
    imported in the master unless lazy-apps is set ("driver imported" says where, not the
    gunicorn master's row)."""
    facts = _uwsgi_facts()
    out = _watch.facts(not facts["uwsgi"]["lazy_apps"])
    out.update(driver_imported_in_master=None, gunicorn=None, **facts)
    return out


class _UwsgiApp:
    """The user's app under uWSGI (``probe``'s source): who imported the driver, when, and
    the uWSGI options that decide it."""

    def import_facts(self, worker=None) -> dict:
        """How the driver got imported, and uWSGI's own words for the deployment."""
        out = _watched_facts()
        out.update(build=os.environ.get("GEVENTPROBE_BUILD", "app"), import_error=None,
                   mode="app", preload=not out["uwsgi"]["lazy_apps"])
        return out

    def driver(self):
        """(driver module, import error): whatever the user's app uses."""
        module, _, error = _watch.driver_module()
        return module, error

    def set_up(self) -> None:
        """Nothing: the user's app and options have set everything up already."""


class _UwsgiHarness:
    """A built-in build under uWSGI (``run --server uwsgi``): the harness app, loaded where
    uWSGI loads an app, with the build's once-per-worker set-up (psycogreen, a control)."""

    def import_facts(self, worker=None) -> dict:
        """Which build, how its driver got imported (seen by ``import_watch``), uWSGI's words."""
        from geventprobe.worker import probe

        harness = probe.HARNESS.import_facts()
        out = _watched_facts()
        out.update(build=harness["build"], import_error=harness["import_error"])
        return out

    def driver(self):
        """(driver module, import error) of the build."""
        from geventprobe.worker import probe

        return probe.HARNESS.driver()

    def set_up(self) -> None:
        """The build's set-up, as under gunicorn."""
        from geventprobe.worker import probe

        probe.HARNESS.set_up()


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

    source = (_UwsgiHarness() if os.environ.get("GEVENTPROBE_UWSGI_SOURCE") == "harness"
              else _UwsgiApp())

    def run():
        # In the greenlet, once the loop runs: the app is loaded and the worker patched by
        # then, so a set-up that imports the driver (a control) does not move its import.
        source.set_up()
        probe.run(source, _Worker())

    gevent.spawn(run)


if _IN_WORKER:
    _start()
else:
    postfork(_start)
