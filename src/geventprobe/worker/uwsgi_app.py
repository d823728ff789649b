"""The WSGI app uWSGI loads for ``geventprobe run --uwsgi``: the user's own, wrapped.

geventprobe starts uWSGI with ``module = geventprobe.worker.uwsgi_app:application`` in place
of the user's ``module``/``wsgi-file`` (``kinds/uwsgi/config.py``), so this module is
imported exactly where and when uWSGI would have imported theirs: in the master before the
fork, or in each worker with ``lazy-apps``, before or after gevent patched as their patch
flags say. It imports their app the way uWSGI's loaders do (a module's callable, or a file
run as module ``uwsgi_file_<path>``) and wraps it with the probe's route
(``probe_route.wrap``: ``/__geventprobe__`` and the route phase's notes); every other
request goes to their app untouched. An app that fails to load is written down in its own
words (``app-error-<pid>.json``) before uWSGI gives up on it.
"""

from __future__ import annotations

import os

from geventprobe.worker import import_watch, probe_route, record, wsgi_load


def _load():
    """Their callable, from ``GEVENTPROBE_UWSGI_APP`` (``module:callable`` or
    ``file:PATH:callable``), as uWSGI's module or file loader would find it."""
    return wsgi_load.load(os.environ["GEVENTPROBE_UWSGI_APP"])


def _loaded():
    import uwsgi

    master = uwsgi.worker_id() == 0
    import_watch.set_phase("uwsgi-master" if master else "uwsgi-worker")
    run_dir = os.environ.get("GEVENTPROBE_RUN_DIR")
    if run_dir:  # an import that outlasts the boot timeout is named as such
        import time

        record.write(os.path.join(run_dir, f"importing-{os.getpid()}.json"),
                     record.Importing(pid=os.getpid(), t=time.monotonic()))
    try:
        return _load()
    except BaseException as exc:
        if run_dir:
            where = ("while the uWSGI master loaded the app" if master else
                     "while the uWSGI worker loaded the app (lazy-apps)")
            record.write(os.path.join(run_dir, f"app-error-{os.getpid()}.json"),
                         import_watch.error_record(exc, where, "/uwsgi"))
        raise
    finally:
        import_watch.snapshot("uwsgi-load")
        import_watch.set_phase("uwsgi-after-load")


application = probe_route.wrap(_loaded())
