"""psycopg2 under gevent workers without psycogreen: libpq waits in C, the hub stops.

Expected: BLOCKING, "psycopg2 has no wait callback". The fix: the
psycogreen_post_worker_init example beside this one.
"""

worker_class = "gevent"
workers = 2
