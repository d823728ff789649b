# A gevent deployment whose app guards a shared client with a lock.
worker_class = "gevent"
workers = 2
