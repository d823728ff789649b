# A gevent deployment whose pool is sized for the concurrency a worker serves.
worker_class = "gevent"
workers = 2
