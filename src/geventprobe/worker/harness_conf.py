"""gunicorn config for the probe: starts the probe in every worker once it has booted.

``post_worker_init`` runs after the gevent worker has monkey-patched and imported
the app (docs/field-facts.md), so the probe sees what the app sees. ``post_fork`` would
be too early: the worker is not patched yet. This file is loaded by the master and
must not import the driver (that would change the import order under test).
"""

worker_class = "gevent"
# gunicorn 27 opens a control socket at $HOME/.gunicorn/gunicorn.ctl by default: one path
# shared by every gunicorn on the machine (and left behind if the master is killed). The
# probe needs none. Older gunicorns ignore a setting they do not know.
control_socket_disable = True


def post_worker_init(worker):
    """Start the probe greenlet; it runs while the worker serves."""
    from geventprobe.worker import probe

    probe.start(worker, probe.HARNESS)
