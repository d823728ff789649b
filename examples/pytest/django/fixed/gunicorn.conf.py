# gunicorn -c gunicorn.conf.py mysite.wsgi:application
# FIXED: psycogreen gives psycopg2 a wait callback that yields to the gevent hub, in each
# worker once it has patched and loaded the app (pip install psycogreen).
worker_class = "gevent"
workers = 2


def post_worker_init(worker):
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()
