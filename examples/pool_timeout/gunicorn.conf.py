# A gevent deployment with a pool of 2 per worker that gives up after 0.5 s.
worker_class = "gevent"
workers = 2
