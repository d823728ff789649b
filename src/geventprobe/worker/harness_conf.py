"""gunicorn config for the probe: starts the probe in every worker once it has booted.

``post_worker_init`` runs after the gevent worker has monkey-patched and imported
the app (docs/field-facts.md), so the probe sees what the app sees. ``post_fork`` would
be too early: the worker is not patched yet. This file is loaded by the master and
must not import the driver (that would change the import order under test).
"""

import os

# The probe's own modules, imported once here rather than in every worker after the fork
# (measured: 25-35 ms of each worker's boot). None of them imports a driver or gevent.
import geventprobe.worker.controls as _controls  # noqa: F401
import geventprobe.worker.monitor as _monitor  # noqa: F401
import geventprobe.worker.probe as _probe  # noqa: F401
import geventprobe.worker.probe_route as _probe_route  # noqa: F401

worker_class = "gevent"
# gunicorn 27 opens a control socket at $HOME/.gunicorn/gunicorn.ctl by default: one path
# shared by every gunicorn on the machine (and left behind if the master is killed). The
# probe needs none. Older gunicorns ignore a setting they do not know.
control_socket_disable = True


def post_worker_init(worker):
    """Start the probe greenlet; it runs while the worker serves."""
    from geventprobe.worker import probe

    probe.start(worker, probe.HARNESS)


def child_exit(server, worker):
    """Once the parent said stop (``stop`` in the run dir) and killed the workers, the master
    leaves as soon as it has reaped the last one: no replacement is started, and nothing is
    left to wind down (0.1 s sleeps and Python's own exit, 0.22-0.25 s, measured)."""
    run_dir = os.environ.get("GEVENTPROBE_RUN_DIR")
    if not run_dir or not os.path.exists(os.path.join(run_dir, "stop")):
        return  # a worker died mid-run (WORKER TIMEOUT, a crash): gunicorn's business
    server.num_workers = 0
    if not server.WORKERS:
        os._exit(0)
