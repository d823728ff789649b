"""psycopg2 made cooperative with psycogreen in ``post_fork``.

``post_fork`` runs in the worker before gevent patches it, but psycogreen's wait
callback calls gevent's own ``wait_read``/``wait_write``, which need no monkey
patching, and the callback is process-wide: it is still in place once the worker
serves. Expected: OK.
"""

worker_class = "gevent"
workers = 2


def post_fork(server, worker):
    """Install psycogreen's gevent wait callback in each worker."""
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()
