"""psycopg2 made cooperative with psycogreen in ``post_worker_init`` (the usual advice).

``post_worker_init`` runs once the worker has patched and loaded the app.
Expected: OK.
"""

worker_class = "gevent"
workers = 2


def post_worker_init(worker):
    """Install psycogreen's gevent wait callback in each worker."""
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()
