# gunicorn -c gunicorn.conf.py mysite.wsgi:application
# BROKEN: psycopg2 has no wait callback here, so libpq waits in C and the gevent hub
# stops: every other request of the worker waits for each query.
worker_class = "gevent"
workers = 2
